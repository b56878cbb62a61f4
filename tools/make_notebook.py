"""Writes notebooks/demo.ipynb (edit the cells here, then run: .venv/bin/python tools/make_notebook.py)."""
import nbformat as nbf
nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# vasa-jax demo: one portrait + one speech clip -> a talking video

[VASA-1](https://arxiv.org/abs/2404.10667)-style audio-driven talking faces in JAX/Flax:
a face latent model (appearance volume, identity, head pose, facial dynamics) renders motion that a
diffusion transformer samples from speech, with gaze / distance / emotion controls and
classifier-free guidance.

Every video this notebook writes carries an invisible watermark and a metadata tag saying it is
synthetic (`vasa-jax verify VIDEO` checks it). Please do not use it to impersonate anyone.

**Runtime**: a GPU runtime is fastest (Runtime > Change runtime type); CPU works too."""),
code("""# Install (Colab). Locally, run `make setup` in the repository instead.
# REPO: the git URL of your vasa-jax copy (the project has no public release yet).
import os, sys
REPO = os.environ.get("VASA_JAX_REPO", "")
if "google.colab" in sys.modules and not os.path.isdir("vasa-jax"):
  assert REPO, "set REPO to the git URL of your vasa-jax copy"
  !git clone -q {REPO} vasa-jax
  %cd vasa-jax
  !pip install -q -r requirements.txt && pip install -q --no-deps -r requirements-nodeps.txt && pip install -q --no-deps -e ."""),
md("""## Load the model

`Animator()` loads the bundled demo weights (`vasa_jax/assets/demo`); pass a folder written by
`vasa-jax export` to use your own. (The test suite runs this notebook with
`VASA_JAX_NOTEBOOK_TINY=1`, which builds an untrained tiny model so it runs in seconds.)"""),
code("""import time
import numpy as np
import jax
import vasa_jax
from vasa_jax import animate

TINY = os.environ.get("VASA_JAX_NOTEBOOK_TINY") == "1"
if TINY:
  from vasa_jax.config_utils import load_config_module
  root = os.path.dirname(os.path.dirname(vasa_jax.__file__))
  fl = load_config_module(os.path.join(root, "configs", "face_latent.py")).get_config("tiny")
  md = load_config_module(os.path.join(root, "configs", "motion_dit.py")).get_config("tiny")
  anim = animate.Animator.from_configs(fl, md)
  STEPS = 2
else:
  anim = vasa_jax.Animator()
  STEPS = 25
print("devices:", jax.devices())
print("face model", anim.size, "px; motion window", anim.window, "frames, context", anim.context)"""),
md("""## Pick a portrait and a speech clip

The bundled example (see `vasa_jax/assets/examples/ATTRIBUTION.md`), or upload your own in Colab.
Any photo with one clearly visible face works (PNG/JPEG/WebP, any size; the largest face is
used); audio in any common format, rate and channel count."""),
code("""examples = os.path.join(os.path.dirname(vasa_jax.__file__), "assets", "examples")
IMAGE = os.path.join(examples, "portrait.jpg")
AUDIO = os.path.join(examples, "speech.flac")
if "google.colab" in sys.modules and not TINY:
  from google.colab import files
  print("Upload a portrait and then a speech file, or cancel to keep the examples.")
  try:
    up = files.upload()
    for name in up:
      if name.lower().endswith((".png", ".jpg", ".jpeg", ".webp")):
        IMAGE = name
      else:
        AUDIO = name
  except Exception as e:
    print("keeping the bundled examples:", e)
from IPython.display import Image as ShowImage, Audio, display
display(ShowImage(IMAGE, width=256))
display(Audio(AUDIO))"""),
md("## Animate"),
code("""os.makedirs("out", exist_ok=True)
t0 = time.perf_counter()
result = anim.animate(IMAGE, AUDIO, steps=STEPS, seed=0)
path = result.save("out/notebook_demo.mp4")
secs = len(result) / result.fps
print(f"{len(result)} frames ({secs:.1f} s of video) in {time.perf_counter() - t0:.1f} s")

from IPython.display import Video
display(Video(path, embed=True, width=384))"""),
md("""## Streaming

`stream` yields frames window by window as soon as they are rendered: the first frames arrive
long before the whole clip is done."""),
code("""stats = {}
t0 = time.perf_counter()
n = 0
for frames in anim.stream(IMAGE, AUDIO, steps=STEPS, seed=0, crop_only=True, stats=stats):
  n += len(frames)
print(f"first frames after {stats['first_frame_s']:.2f} s; {n} frames in {time.perf_counter() - t0:.1f} s")"""),
md("""## Controls

* `gaze=(theta, phi)` main gaze direction in degrees, `distance` head-to-camera distance in
  metres, `emotion` one of neutral / happy / sad / angry / surprised. Left as `None`, the model
  chooses.
* `cfg_audio`, `cfg_gaze`: classifier-free guidance scales (VASA-1 defaults 0.5 and 1.0);
  higher audio guidance exaggerates lip motion.
* `steps`: DDIM steps (25 default; 10 is still usable and faster)."""),
code("""variants = {
    "gaze right": dict(gaze=(15, 0)),
    "closer": dict(distance=0.5),
    "happy": dict(emotion="happy"),
    "strong audio guidance": dict(cfg_audio=2.0),
}
for name, kw in variants.items():
  r = anim.animate(IMAGE, AUDIO, steps=STEPS, seed=0, **kw)
  p = r.save(f"out/notebook_{name.replace(' ', '_')}.mp4")
  print(name, kw)
  display(Video(p, embed=True, width=256))"""),
md("""## Provenance check

Every video written by vasa-jax carries the watermark; `verify` finds it (also after
re-encoding and downscaling)."""),
code("""from vasa_jax import provenance
det, meta_ok, line = provenance.verify(path)
print(line)
assert det.present"""),
]
nb["cells"] = cells
nb["metadata"] = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                  "language_info": {"name": "python"}, "accelerator": "GPU",
                  "colab": {"provenance": []}}
nbf.write(nb, "notebooks/demo.ipynb")
