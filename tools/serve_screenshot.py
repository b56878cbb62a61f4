"""Load the `vasa-jax serve` page in headless Chromium, run the bundled example, and save a
screenshot of the finished page (docs/serve.png). A by-hand check, not a test.

  vasa-jax serve --port 7862 &
  python tools/serve_screenshot.py --url http://127.0.0.1:7862/ --out docs/serve.png

Needs Debian's `chromium` and `pip install playwright` (its own venv is fine; no browser
download: it drives the system Chromium).
"""

import argparse
import time

from playwright.sync_api import sync_playwright


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--url", default="http://127.0.0.1:7862/")
  p.add_argument("--out", default="docs/serve.png")
  p.add_argument("--chromium", default="/usr/bin/chromium")
  p.add_argument("--timeout", type=float, default=300)
  args = p.parse_args()
  with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                 args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(args.url, wait_until="networkidle")
    # The bundled example: the first row of the Examples table fills portrait and speech.
    page.get_by_text("speech.flac").first.click()
    page.wait_for_timeout(1500)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Generate").click()
    seen_stream = None
    while time.perf_counter() - t0 < args.timeout:
      text = page.inner_text("body")
      if seen_stream is None and "rendering:" in text:
        seen_stream = time.perf_counter() - t0
      if "done:" in text:
        break
      page.wait_for_timeout(250)
    else:
      raise SystemExit("the job did not finish in time")
    page.wait_for_timeout(3000)   # the result video loads its first frame
    page.screenshot(path=args.out, full_page=True)
    lines = [ln for ln in page.inner_text("body").splitlines()
             if ln.startswith(("done:", "watermark:"))]
    print(f"streamed status after {seen_stream} s; finished after "
          f"{time.perf_counter() - t0:.1f} s; {lines}")
    browser.close()


if __name__ == "__main__":
  main()
