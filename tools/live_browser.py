"""Drive the web page's live tab in headless Chromium with a fake microphone fed from a speech
file, count the frames that come back, and measure the latency (a test uses `drive` on a tiny
bundle; by hand it writes the screenshot in docs/live/).

  vasa-jax serve --port 7862 &
  python tools/live_browser.py --url http://127.0.0.1:7862/ --audio SPEECH.wav \
      --screenshot docs/live/live_tab.png

Chromium's fake capture device plays the WAV file (16-bit PCM) as the microphone, in a loop
(--use-fake-device-for-media-stream --use-file-for-fake-audio-capture). Needs Debian's
`chromium` and the playwright package (no browser download: it drives the system Chromium).
Prints JSON: frames shown by the <video> (requestVideoFrameCallback), the browser's video
jitter-buffer delay, and whether a second visitor saw the seat taken.
"""

import argparse
import json
import time

FRAME_COUNTER = """() => {
  const v = document.querySelector('.vasa-live-video');
  window.__frames = 0; window.__first = null;
  const cb = (now, meta) => {
    window.__frames++; if (window.__first === null) { window.__first = now; }
    v.requestVideoFrameCallback(cb); };
  v.requestVideoFrameCallback(cb);
}"""

VIDEO_STATS = """async () => {
  const pc = window.vasaLive && window.vasaLive.pc; if (!pc) { return null; }
  const out = {};
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      out.frames_decoded = r.framesDecoded; out.frames_dropped = r.framesDropped;
      out.jitter_buffer_ms = r.jitterBufferEmittedCount ?
        1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount : null;
      out.width = r.frameWidth; out.fps = r.framesPerSecond; }
  });
  return out;
}"""


def drive(url: str, wav: str, *, chromium: str = "/usr/bin/chromium", min_frames: int = 100,
          timeout_s: float = 240.0, screenshot: str | None = None) -> dict:
  from playwright.sync_api import sync_playwright
  args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
          f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required"]
  out = {}
  with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="networkidle")
    page.get_by_role("tab", name="Live").click()
    t0 = time.perf_counter()
    page.get_by_role("button", name="Take the seat").click()
    page.wait_for_function("document.body.innerText.includes('your seat is ready')",
                           timeout=timeout_s * 1000)
    out["seat_ready_s"] = round(time.perf_counter() - t0, 2)
    page.get_by_role("button", name="Start talking").click()
    page.wait_for_function("document.querySelector('.vasa-live-video').srcObject !== null",
                           timeout=timeout_s * 1000)
    page.evaluate(FRAME_COUNTER)
    t1 = time.perf_counter()
    page.wait_for_function(f"window.__frames >= {int(min_frames)}", timeout=timeout_s * 1000)
    out["frames_shown"] = page.evaluate("window.__frames")
    out["seconds"] = round(time.perf_counter() - t1, 2)
    out["video"] = page.evaluate(VIDEO_STATS)
    other = browser.new_context().new_page()
    other.goto(url, wait_until="networkidle")
    other.get_by_role("tab", name="Live").click()
    other.wait_for_timeout(2500)                 # the seat status refreshes every 2 s
    out["second_visitor_sees"] = next(
        (ln for ln in other.inner_text("body").splitlines() if "live seat" in ln), None)
    if screenshot:
      page.screenshot(path=screenshot, full_page=True)
    page.get_by_role("button", name="Stop").click()
    browser.close()
  return out


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--url", default="http://127.0.0.1:7862/")
  p.add_argument("--audio", required=True, help="a 16-bit PCM WAV file: the fake microphone")
  p.add_argument("--chromium", default="/usr/bin/chromium")
  p.add_argument("--frames", type=int, default=250)
  p.add_argument("--screenshot", default=None)
  args = p.parse_args()
  print(json.dumps(drive(args.url, args.audio, chromium=args.chromium, min_frames=args.frames,
                         screenshot=args.screenshot), indent=1))


if __name__ == "__main__":
  main()
