"""The web page's live tab: the browser's microphone in, the talking portrait back, over WebRTC.

One live session at a time (`Seat`): a visitor takes the seat with a portrait (the session is
prepared and compiled then), and their browser connects with `answer`, which plays the part of
FastRTC's audio-video stream handler: each incoming audio frame is pushed into the session
(`live.LiveSession`, resampled from the browser's 48 kHz), and an outgoing video track sends the
rendered frames, watermarked, stamped with the audio time they show. WebRTC is aiortc's (the
library under FastRTC; fastrtc itself does not install beside Gradio 6 yet). No STUN or TURN
server is configured: host candidates connect on the same machine and the local network.

The seat frees itself when the peer disconnects, after `time_limit_s` of session, or after
`idle_s` without a connection once taken. Others see "the live seat is taken; free in N s".
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import secrets
import threading
import time

import numpy as np

from vasa_jax.engine import AnimateError

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000              # RTP video clock (Hz)


class SeatTaken(AnimateError):
  """Someone else holds the live seat."""


class Seat:
  """The one live session the server runs at a time."""

  def __init__(self, anim, *, time_limit_s: float = 120.0, idle_s: float = 30.0):
    self.anim = anim
    self.time_limit_s, self.idle_s = float(time_limit_s), float(idle_s)
    self._lock = threading.Lock()
    self.token = self.session = self.pc = None
    self.taken_at = self.connected_at = None
    self.last_stats: dict = {}      # the last session's figures (frames sent, latency)

  def _expired(self, now: float) -> bool:
    if self.token is None or self.session is None:     # free, or still preparing
      return False
    if self.connected_at is None:
      return now - self.taken_at > self.idle_s
    return now - self.connected_at > self.time_limit_s

  def free_in(self) -> float:
    now = time.monotonic()
    if self.token is None:
      return 0.0
    if self.connected_at is None:
      return max(0.0, self.taken_at + self.idle_s - now)
    return max(0.0, self.connected_at + self.time_limit_s - now)

  def status(self) -> str:
    with self._lock:
      if self._expired(time.monotonic()):
        self._release_locked()
      if self.token is None:
        return "the live seat is free"
      return f"the live seat is taken; free in {self.free_in():.0f} s"

  def take(self, image, **options) -> str:
    """Prepares a session for `image` and returns its token; SeatTaken if held."""
    with self._lock:
      if self._expired(time.monotonic()):
        self._release_locked()
      if self.token is not None:
        raise SeatTaken(f"the live seat is taken; free in {self.free_in():.0f} s")
      self.token = secrets.token_urlsafe(16)
      self.taken_at = time.monotonic()
      token = self.token
    try:
      session = self.anim.live(image, drop_late=True, **options)
    except BaseException:
      self.release(token)
      raise
    with self._lock:
      if self.token != token:           # released meanwhile
        session.close()
        raise SeatTaken("the live seat was released")
      self.session = session
      self.taken_at = time.monotonic()     # the idle clock starts once the session is ready
    return token

  def session_for(self, token: str):
    with self._lock:
      if not token or token != self.token or self.session is None:
        raise SeatTaken("this live seat is no longer yours; take it again")
      return self.session

  def release(self, token: str | None = None) -> None:
    with self._lock:
      if token is None or token == self.token:
        self._release_locked()

  def _release_locked(self) -> None:
    session, pc = self.session, self.pc
    if session is not None and getattr(session, "sent", None):
      lat = np.asarray([x for _, x in session.sent])
      self.last_stats = {**session.stats(), "frames_sent": int(lat.size),
                         "sent_latency_ms": {q: round(float(np.percentile(lat, v)) * 1000, 1)
                                             for q, v in (("p50", 50), ("p95", 95))}}
      log.warning("live session: %s", json.dumps(self.last_stats))
    self.token = self.session = self.pc = self.taken_at = self.connected_at = None
    if session is not None:
      session.close()
    if pc is not None:
      try:
        asyncio.get_running_loop().create_task(pc.close())
      except RuntimeError:
        pass


def _video_track(session):
  """An aiortc video track that sends the session's frames, watermarked, in order."""
  import av
  from aiortc import MediaStreamTrack

  from vasa_jax import provenance

  class PortraitTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self):
      super().__init__()
      self._frames = session.frames()

    async def recv(self):
      loop = asyncio.get_running_loop()
      f = await loop.run_in_executor(None, next, self._frames, None)
      if f is None:
        self.stop()
        from aiortc.mediastreams import MediaStreamError
        raise MediaStreamError
      wait = f.due_at - time.perf_counter()
      if wait > 0:
        await asyncio.sleep(wait)
      session.sent.append((f.index, time.perf_counter() - f.arrived_at))
      frame = av.VideoFrame.from_ndarray(provenance.embed(f.image), format="rgb24")
      frame.pts = int(round(f.audio_time_s * VIDEO_CLOCK))
      frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
      return frame

  return PortraitTrack()


async def _pump_audio(track, session) -> None:
  """Pushes every audio frame the browser sends into the session (mono int16)."""
  from aiortc.mediastreams import MediaStreamError
  while True:
    try:
      frame = await track.recv()
    except MediaStreamError:
      break
    pcm = frame.to_ndarray()                       # [channels, n] (planar) or [1, n * ch]
    ch = len(frame.layout.channels)
    if pcm.shape[0] == 1 and ch > 1:
      pcm = pcm.reshape(-1, ch)
    else:
      pcm = pcm.T
    try:
      session.push(np.ascontiguousarray(pcm), rate=frame.sample_rate)
    except AnimateError:
      break
  session.close()


async def answer(seat: Seat, token: str, sdp: str, kind: str = "offer") -> dict:
  """The server's SDP answer to a browser's offer for the seat `token` (audio sendrecv or
  sendonly from the browser, video recvonly)."""
  from aiortc import RTCPeerConnection, RTCSessionDescription
  session = seat.session_for(token)
  session.sent = []                      # (frame index, audio arrival -> handed to WebRTC s)
  pc = RTCPeerConnection()               # no iceServers: host candidates only
  seat.pc = pc
  seat.connected_at = time.monotonic()
  pc.addTrack(_video_track(session))

  @pc.on("track")
  def on_track(track):
    if track.kind == "audio":
      asyncio.ensure_future(_pump_audio(track, session))

  @pc.on("connectionstatechange")
  async def on_state():
    if pc.connectionState in ("failed", "closed", "disconnected"):
      seat.release(token)

  async def limit():
    await asyncio.sleep(seat.time_limit_s)
    seat.release(token)
  asyncio.ensure_future(limit())
  await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
  await pc.setLocalDescription(await pc.createAnswer())
  return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}


# The tab's page code: microphone -> RTCPeerConnection -> the server's answer -> <video>.
TAB_HTML = """
<div class="vasa-live">
  <button class="vasa-live-start">Start talking</button>
  <button class="vasa-live-stop" disabled>Stop</button>
  <span class="vasa-live-status">${value ? 'your seat is ready: press Start talking' : 'take the seat first'}</span>
  <video class="vasa-live-video" autoplay playsinline muted></video>
</div>
"""

TAB_JS = """
const $ = (s) => element.querySelector(s);
const status = (t) => { const el = $('.vasa-live-status'); if (el) { el.textContent = t; } };
let pc = null, mic = null;
async function stop() {
  if (pc) { pc.close(); pc = null; }
  if (mic) { mic.getTracks().forEach((t) => t.stop()); mic = null; }
  $('.vasa-live-start').disabled = false; $('.vasa-live-stop').disabled = true;
}
async function start() {
  const token = props.value;
  if (!token) { status('take the seat first'); return; }
  $('.vasa-live-start').disabled = true; $('.vasa-live-stop').disabled = false;
  try {
    mic = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true}});
    pc = new RTCPeerConnection();
    window.vasaLive = {pc: pc};            // for tools/live_browser.py's figures
    mic.getTracks().forEach((t) => pc.addTrack(t, mic));
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.ontrack = (e) => {
      if (e.track.kind === 'video') { $('.vasa-live-video').srcObject = new MediaStream([e.track]); }
    };
    pc.onconnectionstatechange = () => { status(pc ? pc.connectionState : 'closed'); };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((ok) => {
      if (pc.iceGatheringState === 'complete') { ok(); return; }
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { ok(); } });
      setTimeout(ok, 2000);
    });
    const ans = await server.live_offer({token: token, sdp: pc.localDescription.sdp,
                                         type: pc.localDescription.type});
    if (ans.error) { status(ans.error); await stop(); return; }
    await pc.setRemoteDescription(ans);
    status('connecting');
  } catch (err) { status('failed: ' + err); await stop(); }
}
// delegated: the template re-renders when the seat's token arrives
element.addEventListener('click', async (e) => {
  if (e.target.closest('.vasa-live-start')) { await start(); }
  else if (e.target.closest('.vasa-live-stop')) { await stop(); status('stopped'); }
});
watch('value', () => { if (props.value) { status('your seat is ready: press Start talking'); } });
"""
