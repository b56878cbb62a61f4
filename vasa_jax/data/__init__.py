"""Datasets (TFDS builders, registered on import) and grain input pipelines."""

from vasa_jax.data.motion_latents import MotionLatents, MotionLatentsConfig
from vasa_jax.data.synthetic_talking_heads import SyntheticConfig, SyntheticTalkingHeads
from vasa_jax.data.talking_face_videos import TalkingFaceVideos, VideosConfig

__all__ = ["MotionLatents", "MotionLatentsConfig", "SyntheticConfig", "SyntheticTalkingHeads",
           "TalkingFaceVideos", "VideosConfig"]
