"""The clip record both dataset builders write, and its encoding.

One record is one clip. Frames are stored as per-frame JPEG bytes so that a reader decodes only
the frames it samples (a stage-1 example needs 2-3 frames of a 100-frame clip), audio as int16
PCM at 16 kHz, per-frame labels as float32 arrays. Labels a source cannot provide (pose of a
real clip, say) are stored as zeros with their `has_*` flag set to 0, so a batch mixing
synthetic and real clips has one structure.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from vasa_jax.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: E402,F401

# Per-frame label tracks: name -> trailing shape.
TRACKS = {
    "pose": (6,),              # yaw, pitch, roll (rad), tx, ty, tz (m)
    "gaze": (2,),              # theta, phi (rad), camera frame
    "mouth": (3,),             # open, wide, round in [0, 1]
    "blink": (),               # 0 open .. 1 closed
    "emotion_intensity": (),   # [0, 1]
}
# Which tracks a record really has (1) or carries as zero placeholders (0).
LABEL_FLAGS = ("has_pose", "has_gaze", "has_mouth", "has_blink", "has_emotion")


def control_features() -> dict:
  """TFDS feature specs of the clip-level controls and their presence flags (shared by every
  builder that stores clips)."""
  import tensorflow_datasets as tfds
  return {
      "control_gaze": tfds.features.Tensor(shape=(2,), dtype=np.float32),
      "control_distance": np.float32,
      "control_emotion": np.int32,
      "control_emotion_intensity": np.float32,
      "has_control_gaze": np.int32,
      "has_control_distance": np.int32,
      "has_control_emotion": np.int32,
  }


def features(size: int):
  """The TFDS FeaturesDict shared by `synthetic_talking_heads` and `talking_face_videos`."""
  import tensorflow_datasets as tfds
  feats = {
      # Per-frame JPEG bytes, [T].
      "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
      # 16 kHz mono int16 PCM, exactly T * 640 samples.
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "num_frames": np.int32,
      "size": np.int32,
      "clip_id": tfds.features.Text(),
      "identity": tfds.features.Text(),
      "identity_index": np.int64,   # stable integer for the identity (hash), for batching
      "source": tfds.features.Text(),  # "synthetic" or the source video path
      # Clip-level controls; gaze/emotion are missing (flag 0) where they cannot be measured.
      **control_features(),
  }
  for name, shape in TRACKS.items():
    feats[name] = tfds.features.Tensor(shape=(None, *shape), dtype=np.float32)
  for flag in LABEL_FLAGS:
    feats[flag] = np.int32
  return tfds.features.FeaturesDict(feats)


def identity_index(identity: str) -> int:
  """A stable 63-bit integer for an identity label (same on every machine and run)."""
  return int.from_bytes(hashlib.sha1(identity.encode()).digest()[:8], "little") >> 1


def is_test_identity(identity: str, test_fraction: float) -> bool:
  """Identity-disjoint split: an identity is in `test` iff its hash falls below the fraction."""
  h = int.from_bytes(hashlib.sha1(("split:" + identity).encode()).digest()[:4], "little")
  return h / 2**32 < test_fraction


def is_test_number(n: int, test_fraction: float) -> bool:
  """Split for numbered identities (synthetic): a golden-ratio sequence, so even a handful of
  identities splits close to the requested fraction, deterministically."""
  return ((n * 0.6180339887498949) % 1.0) < test_fraction


def text(v) -> str:
  """A string field of a record as str: bytes / np.bytes_ (also inside a 0-d array) decoded
  as UTF-8, anything else through str()."""
  v = v.item() if isinstance(v, np.ndarray) else v
  return v.decode("utf-8", "replace") if isinstance(v, (bytes, np.bytes_)) else str(v)


def encode_jpeg(frame: np.ndarray, quality: int = 92) -> bytes:
  import cv2
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise ValueError("JPEG encoding failed")
  return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG/PNG bytes -> uint8 RGB [H, W, 3] (OpenCV's libjpeg-turbo; PIL as a fallback)."""
  import cv2
  arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if arr is None:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  return arr[..., ::-1]


def audio_to_int16(audio: np.ndarray) -> np.ndarray:
  return (np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def audio_to_float(audio: np.ndarray) -> np.ndarray:
  return np.asarray(audio, np.float32) / 32767.0


def make_record(
    *,
    frames: np.ndarray,
    audio: np.ndarray,
    clip_id: str,
    identity: str,
    source: str,
    tracks: dict[str, np.ndarray] | None = None,
    controls: dict | None = None,
    jpeg_quality: int = 92,
) -> dict:
  """Builds one example dict in the shared schema from decoded frames and float audio."""
  frames = np.asarray(frames)
  t, s = frames.shape[0], frames.shape[1]
  if frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.shape[3] != 3:
    raise ValueError(f"frames must be square RGB [T, S, S, 3], got {frames.shape}")
  n = t * SAMPLES_PER_FRAME
  audio = np.asarray(audio, np.float32)
  audio = np.pad(audio[:n], (0, max(0, n - audio.shape[0])))
  tracks = tracks or {}
  controls = controls or {}
  rec = {
      "frames": [encode_jpeg(f, jpeg_quality) for f in frames],
      "audio": audio_to_int16(audio),
      "num_frames": t,
      "size": s,
      "clip_id": clip_id,
      "identity": identity,
      "identity_index": identity_index(identity),
      "source": source,
  }
  for name, shape in TRACKS.items():
    rec[name] = np.asarray(tracks[name], np.float32).reshape(t, *shape) if name in tracks \
        else np.zeros((t, *shape), np.float32)
  rec["has_pose"] = int("pose" in tracks)
  rec["has_gaze"] = int("gaze" in tracks)
  rec["has_mouth"] = int("mouth" in tracks)
  rec["has_blink"] = int("blink" in tracks)
  rec["has_emotion"] = int("emotion_intensity" in tracks)
  gaze = controls.get("gaze")
  dist = controls.get("distance")
  emo = controls.get("emotion")
  rec["control_gaze"] = np.asarray(gaze if gaze is not None else (0.0, 0.0), np.float32)
  rec["control_distance"] = np.float32(dist if dist is not None else 0.0)
  rec["control_emotion"] = np.int32(emo if emo is not None else 0)
  rec["control_emotion_intensity"] = np.float32(controls.get("emotion_intensity") or 0.0)
  rec["has_control_gaze"] = int(gaze is not None)
  rec["has_control_distance"] = int(dist is not None)
  rec["has_control_emotion"] = int(emo is not None)
  return rec
