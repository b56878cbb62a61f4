"""Per-frame speed of the geometry-grounded renderer (and of video-driven reenactment).

  python benchmarks/render.py [--checkpoint DIR] [--sizes 256,512] [--frames 96]
  python benchmarks/render.py --tiny        # untrained tiny decoder (smoke test)

Prints ONE JSON object:
  landmarks_ms          the face mesh + iris models per tracked frame (what reenactment adds
                        per driving frame), measured on the example photo
  render[S]             for a portrait crop of S px (crop-only output), per frame in batches of
                        the Animator's render_batch, after one warm-up batch:
                          geometry_ms  decode the driving mesh, dense field, mouth patch inputs
                          reference_ms the donor entries' choice (Viterbi over the batch) and
                                       the reference on the compositor's patch
                          decoder_ms   the mouth compositor (jitted; per frame of a batch)
                          compose_ms   the warp at the output size, the eye layer, the
                                       closed-lid cross-fade, the mouth composite
                          fps          frames per second for the three together
  photo_fps             S=512 rendered into the photo (paste-back included)
  reenact               a driving video (the example photo moving, 512 px) end to end: frames
                        per second with the driver's landmarks, and the first-frame latency of
                        the stream (portrait preparation + first batch)
Motion: the portrait's own codes with a head turn and a mouth opening that vary every frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cv2  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from vasa_jax import animate as an  # noqa: E402
from vasa_jax import bundle as bundle_lib  # noqa: E402
from vasa_jax import media  # noqa: E402
from vasa_jax.geometry import codes as codes_lib  # noqa: E402
from vasa_jax.geometry import landmarks as lm  # noqa: E402
from vasa_jax.geometry import render  # noqa: E402

EXAMPLES = os.path.join(ROOT, "vasa_jax", "assets", "examples")


def _motion(portrait, basis, n):
  m = np.repeat(portrait.motion[None], n, axis=0)
  t = np.arange(n)
  m[:, 0] += 0.15 * np.sin(t / 7.0)
  d = basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1]
  j = int(np.argmax(np.abs(d)))
  m[:, 6 + j] += np.sign(d[j]) * np.sqrt(basis.exp_var[j]) * 2.0 * (0.5 + 0.5 * np.sin(t / 2.0))
  return m


def _time_render(anim, portrait, motion):
  comp = anim.renderer
  bsz = anim.render_batch
  comp.frames_for(portrait, motion[:bsz])       # warm-up (compilation)
  parts = portrait.parts
  tg = tp = td = tc = 0.0
  n = 0
  for lo in range(0, len(motion) - bsz + 1, bsz):
    part = motion[lo:lo + bsz]
    t0 = time.perf_counter()
    frs = [portrait.geometry.frame(m[:6], m[6:]) for m in part]
    t1 = time.perf_counter()
    idx = parts.select(frs)
    pick = [None if idx is None else int(i) for i in (idx if idx is not None else [None] * len(frs))]
    mouth = np.stack([parts.mouth_inputs(fr, pick[k]) for k, fr in enumerate(frs)])
    t2 = time.perf_counter()
    out = anim.renderer.decode_parts(mouth)
    t3 = time.perf_counter()
    for k, fr in enumerate(frs):
      parts.compose(fr, pick[k], {key: v[k] for key, v in out.items()})
    t4 = time.perf_counter()
    tg, tp, td, tc = tg + t1 - t0, tp + t2 - t1, td + t3 - t2, tc + t4 - t3
    n += len(part)
  total = (tg + tp + td + tc) / n
  return {"geometry_ms": round(tg / n * 1e3, 2), "reference_ms": round(tp / n * 1e3, 2),
          "decoder_ms": round(td / n * 1e3, 2), "compose_ms": round(tc / n * 1e3, 2),
          "fps": round(1.0 / total, 1)}


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--checkpoint", default=None)
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--sizes", default="256,512")
  ap.add_argument("--frames", type=int, default=96)
  args = ap.parse_args(argv)
  if args.tiny:
    from vasa_jax.config_utils import load_config_module
    fl = load_config_module(os.path.join(ROOT, "configs", "face_latent.py")).get_config("geo_tiny")
    md = load_config_module(os.path.join(ROOT, "configs", "motion_dit.py")).get_config(
        "tiny,model.dyn_dim=44")
    basis = codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))
    anim = an.Animator.from_configs(fl, md, face_basis=basis)
  else:
    anim = an.Animator(args.checkpoint)
  photo = media.load_image(os.path.join(EXAMPLES, "portrait.jpg"))
  out = {"device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(),
         "machine": platform.machine(), "loadavg_start": os.getloadavg(),
         "checkpoint": "tiny (random)" if args.tiny else (args.checkpoint or "bundled demo"),
         "render_batch": anim.render_batch, "render": {}}

  mesh = lm.FaceMesh()
  g = mesh.detect(photo)
  list(mesh.track([photo] * 3))
  t = time.perf_counter()
  n = 0
  for _ in mesh.track([photo] * 30):
    n += 1
  out["landmarks_ms"] = round((time.perf_counter() - t) / n * 1e3, 2)

  for size in [int(s) for s in args.sizes.split(",")]:
    x0, y0, side = an.crop_box(g.box, photo.shape[1], photo.shape[0])
    from vasa_jax.data.video import crop_square
    crop = crop_square(photo, (x0, y0, side), size)
    portrait = anim.portrait_from_crop(crop)
    motion = _motion(portrait, anim.basis, args.frames)
    out["render"][str(size)] = _time_render(anim, portrait, motion)

  portrait = anim.prepare_portrait(photo)
  motion = _motion(portrait, anim.basis, args.frames)
  list(anim.render_motion(portrait, motion[:anim.render_batch]))
  t = time.perf_counter()
  frames = sum(len(f) for f in anim.render_motion(portrait, motion))
  out["photo_fps"] = round(frames / (time.perf_counter() - t), 1)
  out["photo_size"] = list(photo.shape[:2])

  with tempfile.TemporaryDirectory() as tmp:
    drv = os.path.join(tmp, "driver.mp4")
    vid = [cv2.warpAffine(photo, cv2.getRotationMatrix2D((256, 256), 4 * np.sin(i / 6), 1.0),
                          (512, 512), borderMode=cv2.BORDER_REPLICATE) for i in range(args.frames)]
    media.write_video(drv, vid)
    re_ = an.Reenactor(anim)
    for _ in re_.stream(photo, drv):        # warm-up
      pass
    stats: dict = {}
    t = time.perf_counter()
    n = sum(len(b) for b in re_.stream(photo, drv, stats=stats))
    wall = time.perf_counter() - t
    out["reenact"] = {"frames": n, "fps": round(n / wall, 1),
                      "first_frame_s": round(stats["first_frame_s"], 3)}
  out["loadavg_end"] = os.getloadavg()
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
