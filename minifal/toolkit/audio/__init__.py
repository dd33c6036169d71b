"""``fal.toolkit.audio``."""

from minifal.toolkit.audio.audio import Audio, AudioField

__all__ = ["Audio", "AudioField"]
