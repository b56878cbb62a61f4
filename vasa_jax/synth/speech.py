"""Text-to-speech for the synthetic corpus: espeak-ng driven through ctypes.

The shared library and its voice data come from the ``espeakng_loader`` wheel, so no
system installation is needed.  We use espeak-ng's synchronous mode: ``espeak_Synth``
returns only after the whole text has been rendered, and our synth callback is called
with consecutive chunks of 16-bit audio plus a list of events (phonemes, words,
sentences) whose ``audio_position`` is measured in milliseconds from the start of the
message.  The audio is resampled from espeak's 22050 Hz to the project's 16 kHz.

The library is initialised once, in a helper process that forks a fresh child per
request (see "process model" below), so results are bit-exact deterministic.  Requests
are serialised by a lock, since espeak-ng keeps global state (voice, parameters,
callback) and the helper serves one request at a time.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import threading
from typing import Optional

import numpy as np

from vasa_jax.constants import SAMPLE_RATE  # noqa: E402

# --- espeak-ng C API constants (speak_lib.h) ---------------------------------------
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000

_EV_LIST_TERMINATED = 0
_EV_WORD = 1
_EV_SENTENCE = 2
_EV_MARK = 3
_EV_PLAY = 4
_EV_END = 5
_EV_MSG_TERMINATED = 6
_EV_PHONEME = 7
_EV_SAMPLERATE = 8

_POS_CHARACTER = 1
_CHARS_UTF8 = 1

_P_RATE = 1
_P_VOLUME = 2
_P_PITCH = 3
_P_RANGE = 4
_P_PUNCTUATION = 5
_P_CAPITALS = 6
_P_WORDGAP = 7


class _EventId(ctypes.Union):
  _fields_ = [
      ("number", ctypes.c_int),
      ("name", ctypes.c_char_p),
      ("string", ctypes.c_char * 8),
  ]


class _Event(ctypes.Structure):
  # Six 32-bit ints (24 bytes) followed by a pointer: on 64-bit targets the pointer is
  # 8-byte aligned at offset 24, the union (8 bytes, pointer aligned) at offset 32, and
  # the struct is 40 bytes.  ctypes applies the native alignment rules for us.
  _fields_ = [
      ("type", ctypes.c_int),
      ("unique_identifier", ctypes.c_uint),
      ("text_position", ctypes.c_int),
      ("length", ctypes.c_int),
      ("audio_position", ctypes.c_int),
      ("sample", ctypes.c_int),
      ("user_data", ctypes.c_void_p),
      ("id", _EventId),
  ]


class _Voice(ctypes.Structure):
  _fields_ = [
      ("name", ctypes.c_char_p),
      ("languages", ctypes.c_char_p),
      ("identifier", ctypes.c_char_p),
      ("gender", ctypes.c_ubyte),
      ("age", ctypes.c_ubyte),
      ("variant", ctypes.c_ubyte),
      ("xx1", ctypes.c_ubyte),
      ("score", ctypes.c_int),
      ("spare", ctypes.c_void_p),
  ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakError(RuntimeError):
  """Raised when the espeak-ng library cannot be loaded or fails to synthesise."""


# --- public data types -------------------------------------------------------------
@dataclasses.dataclass
class Phone:
  start: float  # seconds
  end: float  # seconds
  symbol: str  # espeak phoneme mnemonic (e.g. "aI", "m", "_:")


@dataclasses.dataclass
class Speech:
  audio: np.ndarray  # float32 mono, sample_rate Hz
  sample_rate: int = SAMPLE_RATE
  phones: list = dataclasses.field(default_factory=list)  # list[Phone]
  words: list = dataclasses.field(default_factory=list)  # list[(start, end, word)]
  text: str = ""
  voice: str = ""

  @property
  def duration(self) -> float:
    return len(self.audio) / float(self.sample_rate)


# --- the engine ---------------------------------------------------------------------
_VARIANT_VOLUME = {"paul": 50, "john": 60}  # variants that are louder than the rest


class _Engine:
  """The loaded and initialised espeak-ng library (one per process that uses it)."""

  def __init__(self):
    try:
      import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency missing
      raise EspeakError(
          "espeakng_loader is not installed; `pip install espeakng-loader`"
      ) from e
    lib_path = espeakng_loader.get_library_path()
    data_path = espeakng_loader.get_data_path()
    try:
      lib = ctypes.CDLL(lib_path)
    except OSError as e:
      raise EspeakError(f"could not load espeak-ng library {lib_path!r}: {e}") from e

    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    self._has_seed = hasattr(lib, "espeak_ng_SetRandSeed")
    if self._has_seed:
      lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
      lib.espeak_ng_SetRandSeed.restype = None

    rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 100, data_path.encode(),
        _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT,
    )
    if rate <= 0:
      raise EspeakError(
          f"espeak_Initialize failed (returned {rate}); data path {data_path!r}"
      )
    self.lib = lib
    self.native_rate = int(rate)
    self.data_path = data_path
    self._chunks: list = []
    self._events: list = []
    self._n_samples = 0
    self._lang_table = None
    self._cb_error = None
    # keep a reference to the ctypes callback for the life of the process
    self._cb = _SynthCallback(self._on_synth)
    lib.espeak_SetSynthCallback(self._cb)

  # called from inside espeak_Synth (same thread, synchronous mode)
  def _on_synth(self, wav, numsamples, events):
    try:
      if numsamples > 0 and wav:
        self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        self._n_samples += numsamples
      i = 0
      while True:
        ev = events[i]
        t = ev.type
        if t == _EV_LIST_TERMINATED:
          break
        if t == _EV_PHONEME:
          sym = ev.id.string.split(b"\0", 1)[0].decode("utf-8", "replace")
          self._events.append((t, ev.audio_position, sym, 0, 0))
        elif t in (_EV_WORD, _EV_SENTENCE):
          self._events.append((t, ev.audio_position, "", ev.text_position, ev.length))
        elif t in (_EV_END, _EV_MSG_TERMINATED):
          self._events.append((t, ev.audio_position, "", 0, 0))
        i += 1
    except Exception as e:  # never let a Python exception cross the C boundary
      self._cb_error = e
      return 1  # tells espeak-ng to abort this message
    return 0

  def set_voice(self, name: str):
    err = self.lib.espeak_SetVoiceByName(name.encode())
    if err != 0:
      # language codes such as "en-gb" are not always file names: map them to the
      # voice file identifier ("gmw/en") and keep any "+variant" suffix.
      base, plus, variant = name.partition("+")
      ident = self._lang_to_ident().get(base.lower())
      if ident is not None:
        err = self.lib.espeak_SetVoiceByName((ident + plus + variant).encode())
    if err != 0:
      raise EspeakError(f"espeak-ng rejected voice {name!r} (error {err})")

  def _lang_to_ident(self) -> dict:
    if self._lang_table is None:
      self._lang_table = {}
      for v in self.list_voices():
        for lang in v["languages"][:1]:
          self._lang_table.setdefault(lang.lower(), v["identifier"])
    return self._lang_table

  def render(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
             seed: Optional[int]):
    lib = self.lib
    self.set_voice(voice)
    lib.espeak_SetParameter(_P_RATE, int(rate), 0)
    lib.espeak_SetParameter(_P_PITCH, int(pitch), 0)
    lib.espeak_SetParameter(_P_RANGE, int(pitch_range), 0)
    # headroom: several variants clip espeak's int16 output at the default volume
    variant = voice.partition("+")[2]
    lib.espeak_SetParameter(_P_VOLUME, _VARIANT_VOLUME.get(variant, 70), 0)
    lib.espeak_SetParameter(_P_PUNCTUATION, 0, 0)
    lib.espeak_SetParameter(_P_CAPITALS, 0, 0)
    lib.espeak_SetParameter(_P_WORDGAP, 0, 0)
    if self._has_seed:
      lib.espeak_ng_SetRandSeed(int(seed if seed is not None else 0) & 0x7FFFFFFF)
    self._chunks, self._events, self._n_samples = [], [], 0
    self._cb_error = None
    buf = text.encode("utf-8") + b"\0"
    err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != 0:
      raise EspeakError(f"espeak_Synth failed with error {err}")
    lib.espeak_Synchronize()
    if self._cb_error is not None:
      raise EspeakError(f"synth callback failed: {self._cb_error!r}")
    audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
    events = list(self._events)
    self._chunks, self._events = [], []
    return audio, events

  def list_voices(self, spec_language: Optional[str] = None):
    spec = None
    if spec_language is not None:
      v = _Voice()
      v.languages = spec_language.encode()
      spec = ctypes.pointer(v)
    arr = self.lib.espeak_ListVoices(spec)
    out = []
    i = 0
    while arr[i]:
      v = arr[i].contents
      langs = []
      if v.languages:
        # (priority byte, NUL terminated string)* ... : the c_char_p getter stops
        # at the first NUL, which gives the first entry with its priority byte
        first = v.languages[1:]
        if first:
          langs.append(first.decode("utf-8", "replace"))
      out.append(dict(
          name=(v.name or b"").decode("utf-8", "replace"),
          languages=langs,
          identifier=(v.identifier or b"").decode("utf-8", "replace"),
          gender=int(v.gender),
      ))
      i += 1
    return out


# --- process model ------------------------------------------------------------------
# espeak-ng keeps synthesis state in C statics that no API call resets (the pitch
# "flutter" phase, the echo buffer, the noise generator, ...), so rendering the same text
# twice in one process gives slightly different audio.  For exact determinism the library
# lives in a small helper process that initialises it once and then forks a fresh child
# for every request: each child starts from the identical just-initialised state.  The
# helper is single threaded, so forking it is safe (unlike forking a process running
# JAX).  Set VASA_ESPEAK_INPROCESS=1 (or run where fork is unavailable) to use the
# library directly in this process instead; results are then deterministic only for the
# first call of a process.


def _serve(rfd: int, wfd: int):  # runs in the helper process
  from multiprocessing.connection import Connection

  rconn = Connection(rfd, writable=False)
  wconn = Connection(wfd, readable=False)
  try:
    eng = _Engine()
  except BaseException as e:
    wconn.send(("error", f"{type(e).__name__}: {e}"))
    return
  eng._lang_to_ident()  # build the voice table once, before any fork
  wconn.send(("ok", eng.native_rate, eng.data_path))
  while True:
    try:
      req = rconn.recv()
    except (EOFError, OSError):
      return
    if req is None:
      return
    pid = os.fork()
    if pid == 0:  # child: do the work from a pristine engine state and exit
      code = 0
      try:
        kind, args = req
        if kind == "synth":
          res = ("ok", eng.render(*args))
        elif kind == "voices":
          res = ("ok", eng.list_voices())
        else:
          res = ("error", f"unknown request {kind!r}")
      except BaseException as e:
        res = ("error", f"{type(e).__name__}: {e}")
      try:
        wconn.send(res)
      except BaseException:
        code = 1
      os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
      try:
        wconn.send(("error", f"espeak-ng worker died (wait status {status})"))
      except OSError:
        return


class _Backend:
  """Client side: owns the helper process (or an in-process engine) and a lock."""

  def __init__(self):
    self.lock = threading.Lock()
    self.engine: Optional[_Engine] = None
    self.proc = None
    inproc = os.environ.get("VASA_ESPEAK_INPROCESS", "") not in ("", "0") or not hasattr(
        os, "fork")
    if inproc:
      self.engine = _Engine()
      self.native_rate, self.data_path = self.engine.native_rate, self.engine.data_path
      return
    self._start_helper()

  def _start_helper(self):
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    # load this file directly (not via the package) so the helper stays light
    code = (
        "import importlib.util,sys;"
        "s=importlib.util.spec_from_file_location('_vasa_espeak_helper',sys.argv[1]);"
        "m=importlib.util.module_from_spec(s);sys.modules[s.name]=m;s.loader.exec_module(m);"
        "m._serve(int(sys.argv[2]),int(sys.argv[3]))"
    )
    self.proc = subprocess.Popen(
        [sys.executable, "-c", code, os.path.abspath(__file__), str(req_r), str(res_w)],
        pass_fds=(req_r, res_w), stdin=subprocess.DEVNULL, close_fds=True,
    )
    os.close(req_r)
    os.close(res_w)
    self._w = Connection(req_w, readable=False)
    self._r = Connection(res_r, writable=False)
    if not self._r.poll(120):
      self._stop()
      raise EspeakError("espeak-ng helper process did not start within 120 s")
    try:
      msg = self._r.recv()
    except EOFError:
      self._stop()
      raise EspeakError("espeak-ng helper process exited during start-up") from None
    if msg[0] != "ok":
      self._stop()
      raise EspeakError(f"could not initialise espeak-ng: {msg[1]}")
    self.native_rate, self.data_path = int(msg[1]), msg[2]

  def _stop(self):
    if self.proc is not None:
      try:
        self._w.send(None)
      except Exception:
        pass
      try:
        self.proc.wait(timeout=5)
      except Exception:
        self.proc.kill()
      self.proc = None

  def call(self, kind: str, *args):
    with self.lock:
      if self.engine is not None:
        if kind == "synth":
          return self.engine.render(*args)
        return self.engine.list_voices()
      if self.proc is None or self.proc.poll() is not None:
        self._start_helper()
      try:
        self._w.send((kind, args))
        msg = self._r.recv()
      except (EOFError, OSError) as e:
        self.proc = None
        raise EspeakError(f"espeak-ng helper process failed: {e}") from e
    if msg[0] != "ok":
      raise EspeakError(msg[1])
    return msg[1]


_BACKEND: Optional[_Backend] = None
_BACKEND_PID = -1
_BACKEND_LOCK = threading.Lock()


def _backend() -> _Backend:
  """The process's backend; a forked child (e.g. a data-loader worker) gets its own."""
  global _BACKEND, _BACKEND_PID
  if _BACKEND is None or _BACKEND_PID != os.getpid():
    with _BACKEND_LOCK:
      if _BACKEND is None or _BACKEND_PID != os.getpid():
        _BACKEND = _Backend()
        _BACKEND_PID = os.getpid()
  return _BACKEND


# --- resampling ------------------------------------------------------------------
def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
  if sr_in == sr_out or len(x) == 0:
    return x.astype(np.float32)
  from math import gcd

  from scipy.signal import resample_poly

  g = gcd(sr_in, sr_out)
  y = resample_poly(x.astype(np.float64), sr_out // g, sr_in // g)
  return y.astype(np.float32)


# --- voices -------------------------------------------------------------------------
# Voice variants (espeak-ng-data/voices/!v) that sound like plausible human speakers.
# The gimmicky ones (whisper, robot, croak, child-like, ...) are left out, and so are
# anika, steph and m8, whose boosted low formant makes nasals as loud as vowels (their
# audio energy follows the mouth opening much less than for real speakers).
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "linda", "belinda", "aunty",
                   "Alicia", "shelby")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "adam", "Andy", "david",
                 "edward", "ian", "john", "max", "paul", "robert", "travis", "victor",
                 "Michael", "norbert", "quincy")
# English accents: the mouth model covers the English mnemonic set best.
ENGLISH_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")


def _variant_dir() -> str:
  return os.path.join(_backend().data_path, "voices", "!v")


def list_variants() -> list:
  d = _variant_dir()
  try:
    names = sorted(os.listdir(d))
  except OSError:
    return []
  return [n for n in names if " " not in n]


def _has_dictionary(identifier: str, language: str) -> bool:
  """Whether the voice's pronunciation dictionary ships with the data (some do not)."""
  data = _backend().data_path
  dict_name = language.split("-")[0]
  for sub in ("lang", "voices"):
    try:
      with open(os.path.join(data, sub, identifier), encoding="utf-8", errors="replace") as f:
        for line in f:
          parts = line.split()
          if len(parts) >= 2 and parts[0] == "dictionary":
            dict_name = parts[1]
      break
    except OSError:
      continue
  return os.path.exists(os.path.join(data, f"{dict_name}_dict"))


def list_voices(*, include_variants: bool = False) -> list:
  """Names of usable voices (language identifiers such as "en-us", "de", "fr-fr").

  With ``include_variants`` the English accents are also combined with the curated
  speaker variants ("en-us+f3", "en-gb+m2", ...) that :func:`random_voice` draws from.
  Any variant name from :func:`list_variants` can be appended the same way.  Each name
  can be passed as ``voice=`` to :func:`synthesize`.
  """
  names = []
  for v in _backend().call("voices"):
    if v["identifier"].startswith("mb/"):
      continue  # mbrola voices need the external mbrola binary and databases
    if v["languages"] and _has_dictionary(v["identifier"], v["languages"][0]):
      names.append(v["languages"][0])
  names = sorted(dict.fromkeys(names))
  if include_variants:
    variants = FEMALE_VARIANTS + MALE_VARIANTS
    names += [f"{b}+{v}" for b in ENGLISH_VOICES if b in names for v in variants]
  return names


def random_voice(rng: np.random.Generator) -> dict:
  """Sample speaker settings: a voice name with variant plus rate / pitch / range.

  Returns kwargs for :func:`synthesize`, e.g.
  ``{"voice": "en-gb+m2", "rate": 162, "pitch": 41, "pitch_range": 63}``.
  """
  base = ENGLISH_VOICES[int(rng.choice(len(ENGLISH_VOICES), p=_ACCENT_P))]
  female = rng.random() < 0.5
  pool = FEMALE_VARIANTS if female else MALE_VARIANTS
  variant = pool[int(rng.integers(len(pool)))]
  # male voices sit a bit lower on espeak's relative pitch scale
  pitch_mu = 55.0 if female else 45.0
  return dict(
      voice=f"{base}+{variant}",
      rate=int(rng.integers(130, 211)),
      pitch=int(np.clip(rng.normal(pitch_mu, 10.0), 15, 85)),
      pitch_range=int(np.clip(rng.normal(55.0, 15.0), 20, 95)),
  )


_ACCENT_P = np.array([0.35, 0.25, 0.06, 0.1, 0.06, 0.06, 0.06, 0.06])
_ACCENT_P = _ACCENT_P / _ACCENT_P.sum()


# --- synthesis ----------------------------------------------------------------------
def synthesize(text: str, *, voice: str = "en-us", rate: int = 170, pitch: int = 50,
               pitch_range: int = 50, seed: Optional[int] = None) -> Speech:
  """Render ``text`` with espeak-ng and return 16 kHz audio plus phone/word timings.

  rate: words per minute (80-450); pitch, pitch_range: 0-100 (50 = voice default).
  seed: seeds espeak-ng's internal random generator (breath noise, klatt voices), so
  the same arguments always give the same audio.
  """
  if not text or not text.strip():
    return Speech(audio=np.zeros(0, np.float32), phones=[], words=[], text=text,
                  voice=voice)
  be = _backend()
  pcm, events = be.call("synth", text, voice, int(rate), int(pitch), int(pitch_range), seed)
  sr_in = be.native_rate
  dur = len(pcm) / float(sr_in)
  audio = _resample(pcm.astype(np.float32) / 32768.0, sr_in, SAMPLE_RATE)
  audio = np.clip(audio, -1.0, 1.0).astype(np.float32)

  # phones: each lasts until the next phoneme event (or the end of the audio)
  # "(en)"-style entries mark a switch of language, not a sound: drop them so the
  # preceding phone lasts until the next real one.
  ph_ev = [(pos / 1000.0, sym) for t, pos, sym, _, _ in events
           if t == _EV_PHONEME and sym and not sym.startswith("(")]
  ph_ev.sort(key=lambda e: e[0])
  phones = []
  for k, (t0, sym) in enumerate(ph_ev):
    t1 = ph_ev[k + 1][0] if k + 1 < len(ph_ev) else dur
    t0c, t1c = min(max(t0, 0.0), dur), min(max(t1, 0.0), dur)
    if not sym:
      continue
    phones.append(Phone(start=t0c, end=max(t1c, t0c), symbol=sym))
  # drop zero-length phones (espeak sometimes emits several events at one position)
  phones = [p for p in phones if p.end > p.start] or phones

  # words: text slice from the WORD event; end = last non-pause phone before the next word
  w_ev = [(pos / 1000.0, tp, ln) for t, pos, _, tp, ln in events if t == _EV_WORD]
  w_ev.sort(key=lambda e: e[0])
  words = []
  for k, (t0, tp, ln) in enumerate(w_ev):
    nxt = w_ev[k + 1][0] if k + 1 < len(w_ev) else dur
    t1 = t0
    for p in phones:
      if p.start >= t0 - 1e-6 and p.start < nxt - 1e-6 and not _is_pause(p.symbol):
        t1 = max(t1, p.end)
    if t1 <= t0:
      t1 = nxt
    # text_position is 1-based character index into the text
    s = max(tp - 1, 0)
    word = text[s:s + ln] if ln > 0 else ""
    words.append((float(t0), float(min(t1, dur)), word))
  return Speech(audio=audio, sample_rate=SAMPLE_RATE, phones=phones, words=words,
                text=text, voice=voice)


def is_pause(sym: str) -> bool:
  """True for espeak's pause / silence mnemonics ("_", "_:", "_!", "_|", ...)."""
  return sym.startswith("_") or sym in ("", "||", "|")


_is_pause = is_pause
