#!/usr/bin/env python3
"""Check that an ``lcnn-audit report`` HTML page is self-contained and renders in a real browser.

    python scripts/check_report_render.py report.html --png report.png

1. Static checks: no scripts, no inline event handlers (``onerror=``...) and no
   ``javascript:`` URLs, no remote resources (every ``src``/``href`` is a data URI or a
   ``#fragment``, no ``url(http...)`` or ``@import``), and every embedded image is a valid PNG.
2. Renders the page with headless Chromium (Debian: ``apt-get install chromium``), offline
   (background networking off, a fresh profile), to a PNG screenshot.
3. Checks the screenshot: the page is not blank, and the embedded plots were decoded and
   painted (pixels of matplotlib's default line colours are present).

Exit code 0: all checks passed; 1: a check failed; 2: usage error or no Chromium found.
Prints one JSON object with the findings.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--mute-audio")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: matplotlib's C0 (blue) and C1 (orange): only the embedded plots paint them
PLOT_COLOURS = ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E))


def find_browser(explicit: str | None = None) -> str | None:
    for name in (explicit, os.environ.get("CHROMIUM"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    return None


def static_checks(text: str) -> dict:
    remote = [m.group(0)[:80] for m in re.finditer(r'(?:src|href)\s*=\s*"(?!data:|#)[^"]*"', text)]
    remote += re.findall(r"url\(\s*['\"]?https?:[^)]*\)", text) + re.findall(r"@import[^;]*;", text)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    bad = [i for i, data in enumerate(images) if not base64.b64decode(data).startswith(PNG_MAGIC)]
    handlers = re.findall(r"<[a-z][^>]*?\son[a-z]+\s*=", text, flags=re.I)
    handlers += re.findall(r"javascript:", " ".join(re.findall(r"<[^>]*>", text)), flags=re.I)
    return {"scripts": len(re.findall(r"<script\b", text, flags=re.I)), "event_handlers": len(handlers),
            "remote_references": remote,
            "embedded_images": len(images), "invalid_images": bad}


def screenshot(browser: str, html: Path, png: Path, width: int, height: int, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="lcnn-audit-chromium-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not png.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"chromium exited with {proc.returncode} and wrote no screenshot: {' | '.join(tail)}")
    return " ".join(cmd[:1] + list(FLAGS))


def pixel_checks(png: Path) -> dict:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    non_white = float((img.min(axis=2) < 235).mean())
    plot_pixels = 0
    for colour in PLOT_COLOURS:
        plot_pixels += int((np.abs(img - np.array(colour)).max(axis=2) <= 12).sum())
    return {"size": [int(img.shape[1]), int(img.shape[0])], "non_white_fraction": round(non_white, 4),
            "plot_colour_pixels": plot_pixels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--png", type=Path, help="screenshot path (default: next to the HTML, .png)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=6000, help="window height: how much of the page is captured")
    ap.add_argument("--chromium", help="browser executable (default: $CHROMIUM, then chromium on PATH)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--expect-plots", type=int, default=1, choices=(0, 1),
                    help="require painted plot pixels (0 for a report made with --no-plots)")
    args = ap.parse_args(argv)
    if not args.html.is_file():
        print(json.dumps({"ok": False, "error": f"no such file: {args.html}"}))
        return 2
    browser = find_browser(args.chromium)
    if browser is None:
        print(json.dumps({"ok": False, "error": "no Chromium found (apt-get install chromium, or set $CHROMIUM)"}))
        return 2
    png = args.png or args.html.with_suffix(".png")
    out: dict = {"html": str(args.html), "screenshot": str(png), **static_checks(args.html.read_text("utf-8"))}
    try:
        out["browser"] = screenshot(browser, args.html, png, args.width, args.height, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        out.update(ok=False, error=str(err))
        print(json.dumps(out, indent=2))
        return 1
    out.update(pixel_checks(png))
    problems = []
    if out["scripts"]:
        problems.append("the page has <script> elements")
    if out["event_handlers"]:
        problems.append("the page has inline event handlers or javascript: URLs")
    if out["remote_references"]:
        problems.append("the page references remote resources")
    if out["invalid_images"]:
        problems.append("some embedded images are not valid PNGs")
    if out["non_white_fraction"] < 0.01:
        problems.append("the screenshot is blank")
    if args.expect_plots and (out["embedded_images"] == 0 or out["plot_colour_pixels"] < 200):
        problems.append("no plot was painted (images missing or not decoded)")
    out.update(ok=not problems, problems=problems)
    print(json.dumps(out, indent=2))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
