"""Open a grading report (run_tests.py --report) in headless Chromium, as a student would.

    python tools/browser_check.py REPORT_DIR [--screenshot PNG] [--max-kb 300]

Loads REPORT_DIR/index.html from disk, then reads back from the rendered page: every image's
natural width (0 = it did not load) and the order of the worst-image cards. Prints that as
JSON; exits 1 when an image did not load or the first card is not the worst. With
--screenshot, saves the top of the page as a PNG (quantised to stay under --max-kb).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

# What the page says about itself once loaded, written into the DOM for --dump-dom to show.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => [i.getAttribute("src"), i.naturalWidth]);
  const cards = [...document.querySelectorAll("figure.card")].map(c => Number(c.dataset.iou));
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify({images, cards});
  document.body.appendChild(out);
});
</script>"""
# Flags for a closed network, as root, with no profile to keep (see the chromium(1) manual).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def find_browser() -> Optional[str]:
    """A Chromium or Chrome on the PATH (CHROMIUM=path overrides), or None."""
    names = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


def _run(browser: str, args: List[str], timeout: float = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{browser} exited with {result.returncode}: {result.stderr[-500:]}")
    return result.stdout


def check_page(report_dir: Path, browser: str) -> Dict:
    """{"images": [[src, naturalWidth], ...], "cards": [IoU of each worst-image card, in order]}."""
    page = Path(report_dir) / "index.html"
    html = page.read_text(encoding="utf-8")
    probe_page = page.with_name(".browser-check.html")  # beside it: the same relative links
    probe_page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = _run(browser, ["--virtual-time-budget=15000", "--dump-dom",
                             probe_page.resolve().as_uri()])
    finally:
        probe_page.unlink()
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the page's load event never came (no probe output in the DOM)")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(report_dir: Path, out: Path, browser: str, max_kb: int = 300,
               size: str = "1200,1500") -> Path:
    """The top of the report as a PNG of at most `max_kb` (fewer colours until it fits)."""
    from PIL import Image  # the project's own dependency; imported late for --help speed
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        _run(browser, [f"--window-size={size}", f"--screenshot={raw}",
                       (Path(report_dir) / "index.html").resolve().as_uri()])
        image = Image.open(raw).convert("RGB")
    for colours in (256, 128, 64, 32):
        image.quantize(colours).save(out, optimize=True)
        if out.stat().st_size <= max_kb * 1024:
            break
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report_dir")
    parser.add_argument("--screenshot", type=Path, help="also save the top of the page here")
    parser.add_argument("--max-kb", type=int, default=300, help="the screenshot's size limit")
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        print("no Chromium found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    found = check_page(Path(args.report_dir), browser)
    print(json.dumps(found))
    if args.screenshot:
        path = screenshot(Path(args.report_dir), args.screenshot, browser, args.max_kb)
        print(f"screenshot: {path} ({path.stat().st_size // 1024} KB)")
    broken = [src for src, width in found["images"] if width == 0]
    cards = found["cards"]
    if broken or not cards or cards[0] != min(cards):
        print(f"not loaded: {broken}; card order: {cards[:3]}...", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
