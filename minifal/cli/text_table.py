"""Plain aligned text tables, as the CLI prints them (``minifal runners``, ``startup-report``)."""

from __future__ import annotations

from collections.abc import Container, Sequence


def align_columns(lines: Sequence[Sequence[str]], right_aligned: Container[int] = ()) -> str:
    """Columns two spaces apart, each as wide as its widest cell; the columns whose index is in
    ``right_aligned`` (numbers) align right, the others left. Trailing spaces are trimmed."""
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


NODE_ID_SHOWN = 12


def short_node(node: object) -> str:
    """A node as a table shows it: ``local``, or the first characters of a Ray node id (the
    JSON keeps it whole)."""
    if not isinstance(node, str) or not node:
        return "-"
    return node if len(node) <= NODE_ID_SHOWN else node[:NODE_ID_SHOWN]
