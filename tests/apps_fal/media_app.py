"""Audio and video in and out, written as fal's docs write apps (no model weights needed).

Audio: ``/audio/tone`` synthesises a WAV tone; ``/audio/reverse`` takes an ``Audio`` input (any
http(s) or data: URL) and plays it backwards. Video: ``/video/frames`` renders a short clip as
Motion-JPEG in an AVI container (pure Python + Pillow: no codec library needed);
``/video/probe`` reads a clip's header and enforces the input field's ``VideoValidationConfig``
(a 422 naming the field, where fal only publishes the limits).
"""

from __future__ import annotations

import io
import math
import struct
import wave

import fal
from fal.exceptions import FieldException
from fal.toolkit import (
    Audio,
    AudioField,
    Video,
    VideoField,
    VideoNormalizationConfig,
    VideoValidationConfig,
)
from pydantic import BaseModel, Field

PROBE_LIMITS = VideoValidationConfig(max_duration=5.0, max_width=1024, max_height=1024)


class ToneInput(BaseModel):
    frequency: float = Field(default=440.0, ge=20, le=20000, description="Pitch in Hz")
    duration: float = Field(default=0.5, gt=0, le=10, description="Length in seconds")
    sample_rate: int = Field(default=16000, ge=8000, le=48000)


class ReverseInput(BaseModel):
    audio: Audio = AudioField(description="A 16-bit PCM WAV file to play backwards")


class AudioOutput(BaseModel):
    audio: Audio
    duration: float


class FramesInput(BaseModel):
    width: int = Field(default=64, ge=8, le=1024)
    height: int = Field(default=48, ge=8, le=1024)
    frames: int = Field(default=12, ge=1, le=240)
    fps: int = Field(default=12, ge=1, le=60)


class VideoOutput(BaseModel):
    video: Video


class ProbeInput(BaseModel):
    video: Video = VideoField(
        description="An MJPEG AVI clip",
        constraints=PROBE_LIMITS,
        normalization=VideoNormalizationConfig(fps=24.0),
    )


class VideoInfo(BaseModel):
    width: int
    height: int
    frames: int
    fps: float
    duration: float


class MediaApp(fal.App, keep_alive=60):
    machine_type = "S"

    @fal.endpoint("/audio/tone")
    def tone(self, input: ToneInput) -> AudioOutput:
        count = int(input.duration * input.sample_rate)
        samples = (
            int(12000 * math.sin(2 * math.pi * input.frequency * i / input.sample_rate))
            for i in range(count)
        )
        wav = _wav_bytes(struct.pack(f"<{count}h", *samples), input.sample_rate)
        audio = Audio.from_bytes(wav, content_type="audio/wav", file_name="tone.wav")
        return AudioOutput(audio=audio, duration=count / input.sample_rate)

    @fal.endpoint("/audio/reverse")
    def reverse(self, input: ReverseInput) -> AudioOutput:
        try:
            with wave.open(io.BytesIO(input.audio.as_bytes())) as source:
                if source.getsampwidth() != 2 or source.getnchannels() != 1:
                    raise FieldException("audio", "expected 16-bit mono PCM WAV")
                rate = source.getframerate()
                pcm = source.readframes(source.getnframes())
        except (wave.Error, EOFError) as exc:
            raise FieldException("audio", f"not a WAV file: {exc}") from exc
        reversed_pcm = b"".join(pcm[i : i + 2] for i in range(len(pcm) - 2, -1, -2))
        audio = Audio.from_bytes(
            _wav_bytes(reversed_pcm, rate), content_type="audio/wav", file_name="reversed.wav"
        )
        return AudioOutput(audio=audio, duration=len(pcm) / 2 / rate)

    @fal.endpoint("/video/frames")
    def frames(self, input: FramesInput) -> VideoOutput:
        from PIL import Image as PILImage

        jpegs = []
        for index in range(input.frames):
            shade = int(255 * index / max(input.frames - 1, 1))
            frame = PILImage.new("RGB", (input.width, input.height), (shade, 64, 255 - shade))
            buffer = io.BytesIO()
            frame.save(buffer, format="JPEG", quality=80)
            jpegs.append(buffer.getvalue())
        clip = _mjpeg_avi(jpegs, input.width, input.height, input.fps)
        return VideoOutput(
            video=Video.from_bytes(clip, content_type="video/x-msvideo", file_name="clip.avi")
        )

    @fal.endpoint("/video/probe")
    def probe(self, input: ProbeInput) -> VideoInfo:
        try:
            info = _read_avi_header(input.video.as_bytes())
        except ValueError as exc:
            raise FieldException("video", str(exc)) from exc
        try:
            PROBE_LIMITS.check_video(
                width=info.width,
                height=info.height,
                frames=info.frames,
                duration=info.duration,
                fps=info.fps,
            )
        except ValueError as exc:
            raise FieldException("video", str(exc)) from exc
        return info


def _wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    padding = b"\0" if len(payload) % 2 else b""
    return fourcc + struct.pack("<I", len(payload)) + payload + padding


def _list(kind: bytes, payload: bytes) -> bytes:
    return _chunk(b"LIST", kind + payload)


def _mjpeg_avi(jpegs: list[bytes], width: int, height: int, fps: int) -> bytes:
    """A minimal AVI 1.0 file holding Motion-JPEG frames (what ffmpeg and VLC play)."""
    biggest = max(len(jpeg) for jpeg in jpegs)
    avih = struct.pack(
        "<10I16x",
        1_000_000 // fps,
        biggest * fps,
        0,
        0x10,
        len(jpegs),
        0,
        1,
        biggest,
        width,
        height,
    )
    strh = struct.pack(
        "<4s4sIHHIIIIIIIIhhhh",
        b"vids",
        b"MJPG",
        0,
        0,
        0,
        0,
        1,
        fps,
        0,
        len(jpegs),
        biggest,
        0xFFFFFFFF,
        0,
        0,
        0,
        width,
        height,
    )
    strf = struct.pack(
        "<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0
    )
    header = _list(
        b"hdrl",
        _chunk(b"avih", avih) + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf)),
    )
    movi = b"".join(_chunk(b"00dc", jpeg) for jpeg in jpegs)
    index, offset = [], 4
    for jpeg in jpegs:
        index.append(struct.pack("<4sIII", b"00dc", 0x10, offset, len(jpeg)))
        offset += 8 + len(jpeg) + len(jpeg) % 2
    body = b"AVI " + header + _list(b"movi", movi) + _chunk(b"idx1", b"".join(index))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _read_avi_header(data: bytes) -> VideoInfo:
    """Width, height, frame count and rate from an AVI file's main header (``avih``)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"AVI ":
        raise ValueError("not an AVI file")
    at = data.find(b"avih")
    if at < 0 or len(data) < at + 8 + 40:
        raise ValueError("AVI file has no main header")
    fields = struct.unpack_from("<10I", data, at + 8)
    micro_per_frame, frames, width, height = fields[0], fields[4], fields[8], fields[9]
    if micro_per_frame == 0:
        raise ValueError("AVI main header has no frame rate")
    fps = 1_000_000 / micro_per_frame
    return VideoInfo(
        width=width,
        height=height,
        frames=frames,
        fps=round(fps, 3),
        duration=round(frames / fps, 3),
    )
