"""The VAE decoder's upsamplers as one 2x2 convolution of the small image (SD-Turbo model surgery).

diffusers' ``Upsample2D`` (``use_conv``, interpolate) repeats each pixel 2x2 (nearest) and then
convolves the large image with a 3x3 kernel, padding 1. Every output pixel at ``(2i+a, 2j+b)``
sees only two distinct input rows and two distinct input columns, so the same result is one
2x2 convolution of the small image, zero-padded by 1, with 4x the output channels (one group per
phase ``(a, b)``), whose phases are then interleaved into the large image: phase ``(a, b)`` at
``(i, j)`` is the convolution's output at ``(i+a, j+b)``. With the 3x3 kernel's rows ``w0, w1, w2``,
phase row 0 takes ``(w0, w1+w2)`` on input rows ``(i-1, i)`` and phase row 1 takes
``(w0+w1, w2)`` on rows ``(i, i+1)``; the same for columns; the bias is repeated. That is 16
taps of ``C_in x C_out`` per small-image pixel instead of 36: 2.25x fewer FLOPs in those layers,
the same result up to float rounding (the tap sums are rounded once, in the weights' dtype).

``subpixel_upsamplers(module)`` swaps every such ``Upsample2D`` under ``module`` in place and
returns what it replaced and what it left alone (and why). Call it before anything records the
weights' addresses (an arena, a CUDA graph, a compiled artifact): the new module has new weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Rows (and columns) of the 3x3 kernel summed into each phase's two taps: phase 0 reads input
# rows (i-1, i) with (w0, w1+w2), phase 1 reads rows (i, i+1) with (w0+w1, w2).
PHASE_TAPS = ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def subpixel_weights(
    weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The 2x2 kernel ``(4*C_out, C_in, 2, 2)``, phases ``(a, b)`` in order 00, 01, 10, 11, and its
    bias, from a 3x3 kernel ``(C_out, C_in, 3, 3)`` applied after a nearest 2x upsample."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected a 3x3 kernel, got {tuple(weight.shape)}")
    taps = torch.tensor(PHASE_TAPS, dtype=torch.float64, device=weight.device)  # (phase, tap, row)
    # phase (a, b), taps (p, q): the sum over rows r, columns s of taps[a,p,r] w[r,s] taps[b,q,s]
    phased = torch.einsum("apr,oirs,bqs->aboipq", taps, weight.double(), taps)
    out_channels, in_channels = weight.shape[:2]
    phased = phased.reshape(4 * out_channels, in_channels, 2, 2).to(weight.dtype)
    return phased, None if bias is None else bias.repeat(4)


class SubpixelUpsample2D(nn.Module):
    """Nearest 2x upsample then 3x3 convolution, as one 2x2 convolution of the small image."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.channels, self.out_channels = conv.in_channels, conv.out_channels
        weight, bias = subpixel_weights(conv.weight.detach(), conv.bias)
        self.conv = nn.Conv2d(
            self.channels,
            4 * self.out_channels,
            kernel_size=2,
            padding=1,
            bias=bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            if bias is not None:
                self.conv.bias.copy_(bias)
        self.conv.weight.requires_grad_(conv.weight.requires_grad)

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_size: tuple[int, int] | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        # The call of diffusers' Upsample2D.forward (0.42): output_size, then a deprecated scale.
        batch, channels, height, width = hidden_states.shape
        if channels != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {channels}")
        if output_size is not None and tuple(output_size) != (2 * height, 2 * width):
            raise NotImplementedError(
                f"SubpixelUpsample2D makes only 2x images ({2 * height}x{2 * width}), "
                f"not {tuple(output_size)}"
            )
        phases = self.conv(hidden_states)  # (batch, 4*C, height+1, width+1)
        phases = phases.unflatten(1, (2, 2, self.out_channels))  # (batch, a, b, C, h+1, w+1)
        layout = (
            torch.channels_last
            if hidden_states.is_contiguous(memory_format=torch.channels_last)
            and not hidden_states.is_contiguous()
            else torch.contiguous_format
        )
        image = torch.empty(
            (batch, self.out_channels, 2 * height, 2 * width),
            dtype=phases.dtype,
            device=phases.device,
            memory_format=layout,
        )
        interleaved = image.view(batch, self.out_channels, height, 2, width, 2)
        for a in (0, 1):
            for b in (0, 1):
                phase = phases[:, a, b, :, a : a + height, b : b + width]
                interleaved[:, :, :, a, :, b] = phase
        return image


def upsample_conv(module: nn.Module) -> nn.Module | None:
    """An ``Upsample2D``'s convolution (diffusers names it ``conv`` or ``Conv2d_0``)."""
    return module.conv if module.name == "conv" else module.Conv2d_0


def is_plain_upsample(module: nn.Module) -> str | None:
    """None if ``module`` is an ``Upsample2D`` this file replaces exactly, else why it is not."""
    if getattr(module, "use_conv_transpose", False):
        return "a transposed convolution"
    if not getattr(module, "interpolate", False):
        return "no interpolation"
    if not getattr(module, "use_conv", False):
        return "no convolution"
    if getattr(module, "norm", None) is not None:
        return "a norm before the upsample"
    conv = upsample_conv(module)
    if type(conv) is not nn.Conv2d:
        return f"its convolution is a {type(conv).__name__}"
    plain = dict(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    actual = {name: getattr(conv, name) for name in plain}
    if actual != plain or conv.padding_mode != "zeros":
        return f"its convolution is not 3x3, padding 1: {actual}, {conv.padding_mode}"
    return None


@dataclass
class Replaced:
    """What ``subpixel_upsamplers`` did: the names it replaced, and those it left with why."""

    replaced: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)


def subpixel_upsamplers(root: nn.Module) -> Replaced:
    """Replace every plain ``Upsample2D`` under ``root`` by a ``SubpixelUpsample2D``, in place."""
    from diffusers.models.upsampling import Upsample2D

    report = Replaced()
    for name, module in list(root.named_modules()):
        if not isinstance(module, Upsample2D):
            continue
        why_not = is_plain_upsample(module)
        if why_not is not None:
            report.left[name] = why_not
            continue
        conv = upsample_conv(module)
        parent_name, _, child = name.rpartition(".")
        root.get_submodule(parent_name).register_module(child, SubpixelUpsample2D(conv))
        report.replaced.append(name)
    return report
