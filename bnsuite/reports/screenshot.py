"""PNG screenshots of a rendered report in headless Chromium, each showing what its file is named after, and a
pixel check that a screenshot is not blank.

    python -m bnsuite.reports.screenshot report/index.html    # writes report/front.png and report/matrix.png

Why a section is shot from a copy of the page, not from `index.html#matrix`: headless Chromium's `--screenshot`
captures a blank viewport whenever the URL has a fragment that scrolls the page (every anchor of this report, loaded
machine or idle, with or without `--virtual-time-budget`; the report has no scripts, so nothing runs late). The copy
`<name>.shot.html` hides every other section instead, so the section starts at the top and no scrolling happens.
Exit status: 0 every screenshot written and not blank; 1 some screenshot missing or blank (one line each); 2 no
Chromium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# file name -> (what it shows, the section shown alone or None for the page's top, window size, colours it must show)
SHOTS = {
    "front.png": ("the front page (summary, findings, porting guide)", None, (1366, 1100), ()),
    # the behaviour matrix's cell colours (template: .pass, .diverge, .fail); a matrix without any is not the matrix
    "matrix.png": ("the behaviour matrix", "matrix", (1366, 1400), ((0xe3, 0xf4, 0xe3), (0xdf, 0xea, 0xfb),
                                                                     (0xf9, 0xd2, 0xd2))),
}
MIN_INK = 0.005  # a screenshot is blank when under 0.5% of its pixels differ from its most common colour (a line
MIN_COLOURS = 16  # of text and a table's border), or it has fewer colours than text anti-aliasing alone produces
# The check reads the top band only (undoing PNG filters is a per-byte Python loop: about 1 s per 500 rows); every
# shot shows its heading and first rows there, and the blank shots are blank throughout.
CHECK_ROWS = 500
MIN_SHOWN = 1000  # pixels of the colours a screenshot must show: under half of one matrix cell (112 x 20)


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def section_only(html: str, section: str) -> str:
    """The page with only <section id=section> shown (header, navigation and every other section hidden)."""
    style = (f"<style>main > header, main > nav, main > section:not(#{section}) {{ display: none !important; }}"
             f" #{section} h2 {{ margin-top: 0; }}</style>")
    return html.replace("</head>", style + "</head>", 1)


def shoot(chromium: str, page: str, png: str, size: tuple[int, int]) -> None:
    """One screenshot of a local HTML file at a window size, in a throwaway profile."""
    with tempfile.TemporaryDirectory() as profile:
        try:
            subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={os.path.abspath(png)}",
                            f"--window-size={size[0]},{size[1]}", "file://" + os.path.abspath(page)],
                           capture_output=True, timeout=120)
        except (subprocess.TimeoutExpired, OSError):  # no file then: problem() says "not written"
            pass


def pixels(png: str, rows: int | None = None):
    """The image (its first `rows` rows, or all) as a (height, width, channels) uint8 array: 8-bit, non-interlaced
    PNG, as Chromium writes them. Rows are undone one after the other (a row's filter reads the row above), so a band
    at the top costs only its own rows."""
    import numpy as np

    data = open(png, "rb").read()
    pos, idat = 8, []
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace:
                raise ValueError(f"{png}: only 8-bit non-interlaced PNG is read (depth {depth}, interlace {interlace})")
        elif kind == b"IDAT":
            idat.append(body)
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    stride = w * bpp
    h = h if rows is None else min(h, rows)
    raw = np.frombuffer(zlib.decompressobj().decompress(b"".join(idat), h * (stride + 1)), np.uint8)
    raw = raw.reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for r in range(h):  # undo each row's filter (PNG spec, section 9)
        f, line = int(raw[r, 0]), raw[r, 1:].astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:  # Sub: a running sum along the row, per channel
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) & 255
        elif f == 2:  # Up
            cur = (line + prev) & 255
        else:  # Average, Paeth: each byte depends on its reconstructed left neighbour
            cur, up = line.tolist(), prev.tolist()
            for i in range(stride):
                a, b = (cur[i - bpp] if i >= bpp else 0), up[i]
                c = up[i - bpp] if i >= bpp else 0
                if f == 3:
                    pred = (a + b) >> 1
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (cur[i] + pred) & 255
            cur = np.array(cur, np.int64)
        out[r], prev = cur, cur
    return out.reshape(h, w, bpp)


def problem(png: str, must_show: tuple = ()) -> str | None:
    """Why this screenshot does not show a page (missing, blank, lacking the colours it must show), or None."""
    import numpy as np

    if not os.path.exists(png):
        return f"{png}: not written"
    try:
        rgb = pixels(png, CHECK_ROWS)[..., :3].reshape(-1, 3)
    except Exception as e:  # truncated, palette or otherwise unreadable: one line, not a traceback
        return f"{png}: unreadable PNG ({type(e).__name__}: {e})"
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    ink = 1 - counts.max() / len(rgb)
    if ink < MIN_INK or len(colours) < MIN_COLOURS:
        return (f"{png}: blank ({ink:.1%} of pixels differ from the background "
                f"#{''.join(f'{v:02x}' for v in colours[counts.argmax()])}, {len(colours)} colours)")
    pixels_of = {tuple(int(v) for v in c): int(n) for c, n in zip(colours, counts)}
    if must_show and sum(pixels_of.get(c, 0) for c in must_show) < MIN_SHOWN:
        wanted = ", ".join("#" + "".join(f"{v:02x}" for v in c) for c in must_show)
        return f"{png}: does not show what it is named after (under {MIN_SHOWN} pixels in {wanted})"
    return None


def take(html: str, chromium: str | None = None) -> list[tuple[str, str, str | None]]:
    """Every screenshot in SHOTS beside the report: (png, what it shows, problem or None)."""
    chromium = chromium or browser()
    folder = os.path.dirname(os.path.abspath(html))
    text = open(html, encoding="utf-8").read()
    out = []
    for name, (what, section, size, must_show) in SHOTS.items():
        png = os.path.join(folder, name)
        if os.path.exists(png):
            os.remove(png)  # a stale screenshot must not pass for this run's
        page = html
        if section:
            page = os.path.join(folder, name.replace(".png", ".shot.html"))
            with open(page, "w", encoding="utf-8") as fh:
                fh.write(section_only(text, section))
        try:
            shoot(chromium, page, png, size)
        finally:
            if section:
                os.remove(page)
        out.append((png, what, problem(png, must_show)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnsuite.reports.screenshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="the rendered report (index.html); the PNGs are written beside it")
    args = ap.parse_args(argv)
    chromium = browser()
    if chromium is None:
        print("screenshot: no chromium found; no screenshot of the report", file=sys.stderr)
        return 2
    bad = 0
    for png, what, why in take(args.report, chromium):
        if why:
            bad += 1
            print(f"screenshot: {why}", file=sys.stderr)
        else:
            print(f"screenshot of {what}: {png}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
