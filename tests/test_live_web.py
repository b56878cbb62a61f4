"""The web page's live tab: the seat, and a WebRTC client (aiortc, as a browser would) that
sends speech and gets the talking portrait back (vasa_jax/live_web.py)."""

import asyncio
import os

import numpy as np
import pytest

from vasa_jax import animate as an
from vasa_jax import media

aiortc = pytest.importorskip("aiortc")
from vasa_jax import live_web  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(REPO, "vasa_jax", "assets", "examples", "portrait.jpg")
SPEECH = os.path.join(REPO, "vasa_jax", "assets", "examples", "speech.flac")


def test_one_seat_at_a_time_with_a_time_limit(geo_tiny_live_bundle):
  seat = live_web.Seat(an.Animator(geo_tiny_live_bundle), time_limit_s=60, idle_s=0.5)
  assert seat.status() == "the live seat is free"
  token = seat.take(PORTRAIT)
  assert "taken" in seat.status()
  with pytest.raises(live_web.SeatTaken, match="taken; free in"):
    seat.take(PORTRAIT)
  with pytest.raises(live_web.SeatTaken):
    seat.session_for("not-the-token")
  import time
  time.sleep(0.6)                 # taken but never connected: freed after idle_s
  assert seat.status() == "the live seat is free"
  with pytest.raises(live_web.SeatTaken):
    seat.session_for(token)


def test_a_webrtc_client_sends_speech_and_gets_the_portrait_talking(geo_tiny_live_bundle,
                                                                     tmp_path):
  import soundfile as sf
  wav = str(tmp_path / "speech.wav")
  sf.write(wav, media.load_audio(SPEECH)[:16000 * 3], 16000)
  seat = live_web.Seat(an.Animator(geo_tiny_live_bundle), time_limit_s=60)
  token = seat.take(PORTRAIT)

  async def run():
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer
    player = MediaPlayer(wav)
    pc = RTCPeerConnection()
    pc.addTrack(player.audio)
    pc.addTransceiver("video", direction="recvonly")
    got, done = [], asyncio.Event()

    @pc.on("track")
    def on_track(track):
      async def read():
        while len(got) < 40:
          f = await track.recv()
          got.append((f.pts, f.to_ndarray(format="rgb24")))
        done.set()
      asyncio.ensure_future(read())
    await pc.setLocalDescription(await pc.createOffer())
    ans = await live_web.answer(seat, token, pc.localDescription.sdp, pc.localDescription.type)
    await pc.setRemoteDescription(RTCSessionDescription(**ans))
    await asyncio.wait_for(done.wait(), 180)
    await pc.close()
    return got
  got = asyncio.run(run())
  pts = [p for p, _ in got]
  assert len(got) == 40 and pts == sorted(pts) and len(set(pts)) == len(pts)
  # frames are stamped with the audio time they show, 1/25 s apart on the 90 kHz clock (RTP
  # adds a random offset); a loaded machine skips late frames (drop_late): whole-frame gaps
  assert all(d > 0 and d % 3600 == 0 for d in np.diff(pts))
  img = got[-1][1]
  assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 10
  seat.release(token)
  assert seat.status() == "the live seat is free"
