"""``fal.toolkit.video``."""

from minifal.toolkit.video.video import Video, VideoField

__all__ = ["Video", "VideoField"]
