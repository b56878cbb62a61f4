r"""Trains the phonetic audio front end (vasa_jax/models/phonetic.py) on espeak-ng speech.

    python -m vasa_jax.train.phonetic [--utterances 1500] [--steps 3000] [--batch 32] \
        [--seed 0] [--cache /tmp/vasa_phonetic] [--out vasa_jax/assets/phonetic]

The corpus: generated sentences (vasa_jax.synth.sentences) read by espeak-ng voices of many
languages, accents, sexes, rates and pitches; every phone's timing is known, so each 25-fps
frame gets its viseme class and the coarticulated mouth shape (vasa_jax.synth.motion
.mouth_track). Training crops of 2.56 s are augmented on the fly (gain, additive white /
brown noise at 0-30 dB SNR, reverberation with RT60 0.1-0.7 s, speed and pitch +-10% with the
labels retimed), so that what is learned is the phonetic content, not espeak's voice.

Held out by language (voices never trained on) and reported in the weights' metadata:
viseme accuracy, bilabial recall, and the correlation of the predicted mouth opening with
the true one, clean and with noise + reverberation. The training loop is the project's one
(vasa_jax/train/loop.py), in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

import numpy as np

from vasa_jax.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from vasa_jax.models import phonetic as ph

log = logging.getLogger(__name__)

CROP = 64                          # frames per training crop (2.56 s)
TRAIN_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "de", "es", "fr-fr", "pt",
                   "nl", "ru", "hi", "sv", "cs", "el", "tr", "id", "vi", "ro", "fi", "da",
                   "cmn", "ja", "ko", "ar", "sw")
HELD_OUT_LANGUAGES = ("it", "pl", "hu", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")


# ----------------------------------------------------------------------------- labels

def viseme_of(symbol: str) -> int:
  """The viseme class (index into phonetic.VISEMES) of an espeak phone mnemonic."""
  from vasa_jax.synth.speech import is_pause
  if is_pause(symbol):
    return ph.VISEMES.index("silence")
  s = symbol.lstrip("',=")
  core = s.rstrip(":~^#-23456789!;")
  table = {"p": "bilabial", "b": "bilabial", "m": "bilabial", "B": "bilabial",
           "f": "labiodental", "v": "labiodental", "T": "dental", "D": "dental",
           "t": "alveolar", "d": "alveolar", "n": "alveolar", "l": "alveolar", "s": "alveolar",
           "z": "alveolar", "ts": "alveolar", "dz": "alveolar", "L": "alveolar",
           "S": "postalveolar", "Z": "postalveolar", "tS": "postalveolar",
           "dZ": "postalveolar", "j": "postalveolar", "J": "postalveolar", "C": "postalveolar",
           "c": "velar", "k": "velar", "g": "velar", "N": "velar", "x": "velar", "h": "velar",
           "?": "velar", "q": "velar", "G": "velar", "Q": "velar",
           "r": "r", "R": "r", "*": "r", "w": "w", "W": "w"}
  if core in table:
    return ph.VISEMES.index(table[core])
  c = core[:1]
  if c in table and len(core) > 1 and core[1:2] not in "aeiouAEIOU@03&VY":
    return ph.VISEMES.index(table[c])      # a consonant with a modifier letter ("t#", "rr")
  first = (core or "@")[:1]
  if first in "aA&0V":
    return ph.VISEMES.index("open")
  if first in "iIy":
    return ph.VISEMES.index("rounded" if first == "y" else "close_front")
  if first in "uUoOY":
    return ph.VISEMES.index("rounded")
  if first in "eE@3":
    return ph.VISEMES.index("mid")
  if c in table:
    return ph.VISEMES.index(table[c])
  return ph.VISEMES.index("alveolar")      # an unknown consonant: the commonest place


def frame_labels(phones, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(viseme class int32 [n], mouth (open, wide, round) float32 [n, 3]) at frame centres."""
  from vasa_jax.synth import motion as synth_motion
  cls = np.full(n, ph.VISEMES.index("silence"), np.int32)
  t = (np.arange(n) + 0.5) / FPS
  for p in phones:
    cls[(t >= p.start) & (t < p.end)] = viseme_of(p.symbol)
  return cls, synth_motion.mouth_track(phones, n)


# ----------------------------------------------------------------------------- corpus

def _voice(rng: np.random.Generator, languages) -> dict:
  lang = languages[int(rng.integers(len(languages)))]
  female = rng.random() < 0.5
  variant = [v for v in VARIANTS if v.startswith("f" if female else "m")]
  return {"voice": f"{lang}+{variant[int(rng.integers(len(variant)))]}",
          "rate": int(rng.integers(120, 221)),
          "pitch": int(np.clip(rng.normal(58 if female else 42, 10), 10, 90)),
          "pitch_range": int(np.clip(rng.normal(55, 15), 15, 95))}


def make_corpus(n: int, seed: int, languages=TRAIN_LANGUAGES, cache: str | None = None,
                progress=None) -> list[dict]:
  """n utterances {"audio" float32, "viseme" [T], "mouth" [T, 3], "voice"}; cached as .npz."""
  from vasa_jax.synth import sentences, speech
  path = None
  if cache:
    os.makedirs(cache, exist_ok=True)
    import hashlib
    tag = f"n{n}_s{seed}_{hashlib.sha256(' '.join(languages).encode()).hexdigest()[:8]}"
    path = os.path.join(cache, f"corpus_{tag}.npz")
    if os.path.isfile(path):
      with np.load(path, allow_pickle=False) as z:
        starts = z["starts"]
        fstarts = z["fstarts"]
        voices = [str(v) for v in z["voices"]]
        return [{"audio": z["audio"][starts[i]:starts[i + 1]],
                 "viseme": z["viseme"][fstarts[i]:fstarts[i + 1]],
                 "mouth": z["mouth"][fstarts[i]:fstarts[i + 1]], "voice": voices[i]}
                for i in range(len(voices))]
  rng = np.random.default_rng(seed)
  out = []
  while len(out) < n:
    v = _voice(rng, languages)
    text = sentences.make_script(rng, float(rng.uniform(2.5, 6.0)))
    try:
      sp = speech.synthesize(text, seed=int(rng.integers(1 << 30)), **v)
    except speech.EspeakError:
      continue
    t = len(sp.audio) // SAMPLES_PER_FRAME
    if t < CROP // 2 or not np.isfinite(sp.audio).all() or np.abs(sp.audio).max() < 1e-3:
      continue
    cls, mouth = frame_labels(sp.phones, t)
    out.append({"audio": sp.audio[:t * SAMPLES_PER_FRAME], "viseme": cls, "mouth": mouth,
                "voice": v["voice"]})
    if progress is not None:
      progress(len(out), n)
  if path:
    a_st = np.cumsum([0] + [len(u["audio"]) for u in out])
    f_st = np.cumsum([0] + [len(u["viseme"]) for u in out])
    tmp = path + ".tmp.npz"
    np.savez(tmp, audio=np.concatenate([u["audio"] for u in out]),
             viseme=np.concatenate([u["viseme"] for u in out]),
             mouth=np.concatenate([u["mouth"] for u in out]), starts=a_st, fstarts=f_st,
             voices=np.array([u["voice"] for u in out]))
    os.replace(tmp, path)
  return out


# ----------------------------------------------------------------------------- augmentation

def reverb(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
  """x convolved with a random room: a direct path plus an exponentially decaying noise tail
  (RT60 0.1-0.7 s), at a random direct-to-reverberant ratio."""
  rt60 = rng.uniform(0.1, 0.7)
  n = int(rt60 * SAMPLE_RATE)
  t = np.arange(n) / SAMPLE_RATE
  tail = rng.normal(size=n) * np.exp(-6.9 * t / rt60)
  tail[: int(0.003 * SAMPLE_RATE)] = 0.0
  ir = np.zeros(n)
  ir[0] = 1.0
  ir += tail * 10 ** (-rng.uniform(0, 12) / 20) / max(np.sqrt((tail ** 2).sum()), 1e-9)
  m = 1 << int(math.ceil(math.log2(len(x) + n)))
  y = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(ir, m), m)[:len(x)]
  return (y * np.abs(x).max() / max(np.abs(y).max(), 1e-9)).astype(np.float32)


def noise(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
  """x plus white or brown noise at 0-30 dB SNR."""
  n = rng.normal(size=len(x))
  if rng.random() < 0.5:
    n = np.cumsum(n)
    n -= np.convolve(n, np.ones(400) / 400, mode="same")
  snr = rng.uniform(0, 30)
  p = np.mean(x.astype(np.float64) ** 2) + 1e-12
  n *= np.sqrt(p / (np.mean(n ** 2) + 1e-12) / 10 ** (snr / 10))
  return (x + n).astype(np.float32)


def crop_batch(rng: np.random.Generator, corpus, batch: int, augment: bool = True):
  """(audio [B, CROP * 640], viseme [B, CROP], mouth [B, CROP, 3], mask [B, CROP])."""
  need = CROP * SAMPLES_PER_FRAME
  aud = np.zeros((batch, need), np.float32)
  vis = np.zeros((batch, CROP), np.int32)
  mou = np.zeros((batch, CROP, 3), np.float32)
  mask = np.zeros((batch, CROP), np.float32)
  for b in range(batch):
    u = corpus[int(rng.integers(len(corpus)))]
    speed = rng.uniform(0.9, 1.1) if augment else 1.0
    frames = len(u["viseme"])
    src = int(min(frames, math.ceil(CROP * speed) + 1))
    f0 = int(rng.integers(0, frames - src + 1))
    a = u["audio"][f0 * SAMPLES_PER_FRAME:(f0 + src) * SAMPLES_PER_FRAME]
    if speed != 1.0:        # resampling changes tempo and pitch together; labels follow
      pos = np.arange(0, len(a) - 1, speed)
      a = np.interp(pos, np.arange(len(a)), a).astype(np.float32)
    n = min(CROP, len(a) // SAMPLES_PER_FRAME)
    idx = np.minimum((np.arange(n) + 0.5) * speed, src - 1e-6).astype(int)
    if augment:
      a = a * 10 ** (rng.uniform(-20, 6) / 20)
      if rng.random() < 0.5:
        a = reverb(rng, a)
      if rng.random() < 0.7:
        a = noise(rng, a)
    aud[b, :n * SAMPLES_PER_FRAME] = np.clip(a[:n * SAMPLES_PER_FRAME], -1, 1)
    vis[b, :n], mou[b, :n], mask[b, :n] = (u["viseme"][f0:][idx], u["mouth"][f0:][idx], 1.0)
  return aud, vis, mou, mask


# ----------------------------------------------------------------------------- training

def loss_fn(params, model, batch):
  import jax
  import jax.numpy as jnp
  audio, vis, mouth, mask = batch
  _, logits, pred = model.apply({"params": params}, ph.features(audio))
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), vis[..., None], -1)[..., 0]
  den = jnp.maximum(mask.sum(), 1.0)
  l_cls = (ce * mask).sum() / den
  l_mouth = (jnp.abs(pred - mouth).sum(-1) * mask).sum() / den
  acc = ((jnp.argmax(logits, -1) == vis) * mask).sum() / den
  return l_cls + 4.0 * l_mouth, {"viseme_ce": l_cls, "mouth_l1": l_mouth, "acc": acc}


def train(corpus, *, steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0,
          cfg: ph.Config = ph.Config(), log_every: int = 100, max_seconds: float = 0.0):
  """Fits the encoder through the one training loop; returns (params, info)."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  import optax

  from vasa_jax.train import common, loop
  tx = common.adamw(lr, warmup_steps=min(200, steps // 10 + 1), decay_steps=steps,
                    weight_decay=1e-4)
  model = ph.PhoneticEncoder(cfg)
  params = ph.init_params(cfg, seed)

  @jax.jit
  def step(state, b):
    p, o = state
    (loss, parts), g = jax.value_and_grad(loss_fn, has_aux=True)(p, model, b)
    upd, o = tx.update(g, o, p)
    return (optax.apply_updates(p, upd), o), {"loss": loss, **parts}

  rng = np.random.default_rng(seed)
  hist, t0 = [], time.perf_counter()

  def record(done, s):
    hist.append({"step": done, **{k: round(float(v), 4) for k, v in s.items()
                                  if not k.startswith("data/")},
                 "seconds": round(time.perf_counter() - t0, 1)})
    log.warning("%s", hist[-1])

  out = loop.run(ml_collections.ConfigDict({"steps": steps, "log_every": log_every}),
                 state=(params, tx.init(params)), start=0,
                 data_iter=loop.forever(lambda: crop_batch(rng, corpus, batch)),
                 train_step=step, make_batch=lambda b: tuple(jnp.asarray(x) for x in b),
                 on_log=[record], max_seconds=max_seconds)
  return jax.device_get(out.state[0]), {"steps": out.step, "history": hist,
                                        "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------- validation

def _corr(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a, b = a - a.mean(), b - b.mean()
  d = math.sqrt(float((a * a).sum() * (b * b).sum()))
  return float((a * b).sum() / d) if d > 1e-12 else 0.0


def validate(source: ph.PhoneticSource, corpus, *, seed: int = 1) -> dict:
  """Per condition (clean; noise + reverberation): viseme accuracy, bilabial recall and
  precision, and the correlation of predicted and true mouth opening -- next to the same
  correlation for the audio's loudness envelope (the baseline the front end must beat)."""
  rng = np.random.default_rng(seed)
  bil = ph.VISEMES.index("bilabial")
  out = {}
  for cond in ("clean", "noisy_reverberant"):
    tp = fp = fn = 0
    accs, r_pred, r_env = [], [], []
    for u in corpus:
      a = u["audio"]
      if cond != "clean":
        a = noise(rng, reverb(rng, a))
      p = source.predict(a)
      n = min(len(p["viseme"]), len(u["viseme"]))
      v, pv = u["viseme"][:n], p["viseme"][:n]
      accs.append(float(np.mean(v == pv)))
      tp += int(((v == bil) & (pv == bil)).sum())
      fp += int(((v != bil) & (pv == bil)).sum())
      fn += int(((v == bil) & (pv != bil)).sum())
      r_pred.append(_corr(p["mouth"][:n, 0], u["mouth"][:n, 0]))
      rms = np.sqrt(np.mean(a[:n * SAMPLES_PER_FRAME].reshape(n, -1) ** 2, -1))
      r_env.append(_corr(rms, u["mouth"][:n, 0]))
    out[cond] = {"viseme_acc": round(float(np.mean(accs)), 4),
                 "bilabial_recall": round(tp / max(tp + fn, 1), 4),
                 "bilabial_precision": round(tp / max(tp + fp, 1), 4),
                 "mouth_open_r": round(float(np.mean(r_pred)), 4),
                 "loudness_open_r": round(float(np.mean(r_env)), 4)}
  out["utterances"] = len(corpus)
  return out


def _parser():
  p = argparse.ArgumentParser(prog="python -m vasa_jax.train.phonetic",
                              description="Train the phonetic audio front end on espeak-ng "
                                          "speech (see vasa_jax/train/phonetic.py).")
  p.add_argument("--utterances", type=int, default=1500)
  p.add_argument("--val-utterances", type=int, default=120)
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--lr", type=float, default=2e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-seconds", type=float, default=0.0, help="time budget (0: none)")
  p.add_argument("--cache", default="/tmp/vasa_phonetic", help="corpus cache ('' = none)")
  p.add_argument("--out", default=ph.default_dir())
  return p


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  args = _parser().parse_args(argv)
  if min(args.utterances, args.val_utterances, args.steps, args.batch) < 1:
    print("phonetic: error: --utterances, --val-utterances, --steps and --batch must be >= 1",
          file=sys.stderr)
    return 2
  t0 = time.perf_counter()
  corpus = make_corpus(args.utterances, args.seed, cache=args.cache or None)
  val = make_corpus(args.val_utterances, args.seed + 1000, HELD_OUT_LANGUAGES,
                    cache=args.cache or None)
  log.warning("corpus: %d train, %d held-out utterances (%.0f s)", len(corpus), len(val),
              time.perf_counter() - t0)
  params, info = train(corpus, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                       max_seconds=args.max_seconds)
  report = validate(ph.PhoneticSource(params), val)
  meta = {"training": {**info, "utterances": len(corpus), "languages": list(TRAIN_LANGUAGES),
                       "command": "python -m vasa_jax.train.phonetic " + " ".join(
                           argv if argv is not None else sys.argv[1:])},
          "held_out": {"languages": list(HELD_OUT_LANGUAGES), **report}}
  ph.save(args.out, params, ph.Config(), meta)
  print(json.dumps({"out": args.out, "steps": info["steps"], "held_out": meta["held_out"]},
                   indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
