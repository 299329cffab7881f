"""Line plots as SVG geometry (computed here, drawn by the template), each with a one-line reading derived from
its data."""

from __future__ import annotations

import math

from bnsuite.reports.values import num

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22", "#393b79", "#ad494a")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= n)
    return [i * step for i in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]


def _label(rec: dict, recs: list[dict]) -> str:
    vary = lambda f: len({str(r.get(f)) for r in recs}) > 1
    return " / ".join(str(rec.get(f, "")) for f in ("adapter", "device", "dtype", "how", "layout")
                      if (f == "adapter" or vary(f)) and rec.get(f) not in (None, ""))


def _points(rec: dict) -> list[tuple[float, float]]:
    pts = []
    for x, y in zip(rec["x"], rec["y"]):
        fx, fy = num(x), num(y)
        if fx is not None and fy is not None and math.isfinite(fx) and math.isfinite(fy) and fx > 0:
            pts.append((fx, fy))
    return pts


def reading(recs: list[dict]) -> str:
    """One sentence derived from the data: which series are flat, which is the largest and where."""
    xlabel = str(recs[0].get("xlabel", "x"))
    series = [(_label(r, recs), _points(r)) for r in recs]
    series = [(lab, p) for lab, p in series if p]
    if not series:
        return "No finite points."
    ys = [y for _, p in series for _, y in p]
    if all(y == ys[0] for y in ys):
        return f"Every series is constant at {ys[0]:.3g} for every {xlabel}."
    expected = [(_label(r, recs), [num(e) for e in r["expected"]]) for r in recs
                if isinstance(r.get("expected"), list) and len(r["expected"]) == len(r["x"])]
    if expected:  # curves that carry their expectation: how far each strays from it
        gaps = []
        for r, (name, exp) in zip([r for r in recs if isinstance(r.get("expected"), list)], expected):
            for x, y, e in zip(r["x"], r["y"], exp):
                if num(x) is not None and num(y) is not None and e is not None:
                    gaps.append((abs(num(y) - e), name, num(x), num(y), e))
        if gaps:
            g, name, x, y, e = max(gaps)
            return (f"Every series follows its expected value within {g:.2g}; the largest departure: {name}, {y:.3g} "
                    f"vs {e:.3g} expected at {xlabel} {x:g}.")
    lab, p = max(series, key=lambda s: max(abs(y) for _, y in s[1]))
    x, y = max(p, key=lambda xy: abs(xy[1]))
    out = f"Largest: {lab}, {y:.3g} at {xlabel} {x:g}"
    xs_all = sorted({x for _, q in series for x, _ in q})
    zero_from = next((x0 for x0 in xs_all if all(y == 0 for _, q in series for x, y in q if x >= x0)), None)
    if zero_from is not None and zero_from not in (xs_all[0], xs_all[-1]):
        out += f"; every series is exactly 0 from {xlabel} {zero_from:g} on"
    flat = [(name, q[0][1]) for name, q in series if len({y for _, y in q}) == 1]
    if flat:
        values = {v for _, v in flat}
        at = f" at {values.pop():.3g}" if len(values) == 1 else ""
        names = [n for n, _ in flat]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        out += f"; constant{at}: {shown}"
    return out + "."


def svg_plot(name: str, recs: list[dict]) -> dict:
    """Line plot geometry (log x; log y when y spans >= 2 decades)."""
    series = [(rec, _points(rec)) for rec in recs]
    longest = max((len(_label(r, recs)) for r in recs), default=10)
    W, H, L, T, B = 560, 330, 72, 16, 48
    R = 50 + 7 * longest  # room for the legend
    W += R
    xs = [x for _, p in series for x, _ in p]
    ys = [y for _, p in series for _, y in p]
    if not xs:
        return {"name": name, "empty": True, "reading": "No finite positive points."}
    pos = [y for y in ys if y > 0]
    logy = bool(pos) and min(ys) >= 0 and max(pos) / min(pos) >= 100
    floor = min(pos) / 2 if logy else 0.0  # zeros sit on the bottom edge of a log axis
    fy = (lambda y: math.log10(max(y, floor))) if logy else float
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = fy(min(ys)), fy(max(ys))
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) or 1) * 0.1, y1 + (abs(y1) or 1) * 0.1
    if not logy and 0 < y0 < 0.5 * y1:
        y0 = 0.0  # linear axes read best from zero
    px = lambda x: L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)
    py = lambda y: T + (1 - (fy(y) - y0) / (y1 - y0)) * (H - T - B)
    distinct = sorted(set(xs))
    xt = distinct if len(distinct) <= 12 else [10.0 ** k for k in range(math.ceil(x0), math.floor(x1) + 1)]
    yt = ([10.0 ** k for k in range(math.ceil(y0), math.floor(y1) + 1)] if logy else nice_ticks(y0, y1))
    lines = []
    for i, (rec, pts) in enumerate(series):
        label = _label(rec, recs)
        lines.append({"label": label, "color": PALETTE[i % len(PALETTE)],
                      "points": " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts),
                      "dots": [(round(px(x), 1), round(py(y), 1), f"{label}: x={x:g}, y={y:.3g}") for x, y in pts]})
    return {"name": name, "empty": False, "W": W, "H": H, "L": L, "R": R, "T": T, "B": B,
            "xlabel": str(recs[0].get("xlabel", "x")),
            "ylabel": str(recs[0].get("ylabel", "y")) + (" (log)" if logy else ""),
            "xticks": [(round(px(x), 1), f"{x:g}") for x in xt],
            "yticks": [(round(py(y), 1), f"{y:.3g}") for y in yt], "lines": lines, "reading": reading(recs)}
