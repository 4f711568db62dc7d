#!/usr/bin/env python3
"""Draws the plots of BENCHMARKS.md from the data in docs/benchmarks/*.csv.

    scripts/plot-benchmarks.py        # writes docs/benchmarks/*.svg

Python 3 standard library only; the SVG is written by hand. Each CSV says
in its header which command produced its figures, on which machine, date
and commit. After a new measurement, update the CSV, run this script and
commit both.
"""

import csv
import math
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "docs", "benchmarks")

WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 210, 40, 50
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def rows(name):
    with open(os.path.join(DATA, name), newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Axis:
    def __init__(self, lo, hi, log, pixels_lo, pixels_hi):
        self.lo, self.hi, self.log = lo, hi, log
        self.p0, self.p1 = pixels_lo, pixels_hi

    def __call__(self, v):
        f = (lambda x: math.log10(x)) if self.log else (lambda x: x)
        t = (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo))
        return self.p0 + t * (self.p1 - self.p0)

    def ticks(self):
        if self.log:
            e = int(math.log10(self.lo) // 1)
            out = []
            while 10**e <= self.hi * 1.0001:
                if 10**e >= self.lo * 0.9999:
                    out.append(10**e)
                e += 1
            return out
        span = self.hi - self.lo
        step = 10 ** int(math.log10(span / 4) // 1)
        for m in (1, 2, 5, 10):
            if span / (step * m) <= 6:
                step *= m
                break
        v = math.ceil(self.lo / step) * step
        out = []
        while v <= self.hi + 1e-9:
            out.append(v)
            v += step
        return out


def label(v):
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:g}"
    return f"{v:g}"


def plot(path, title, xlabel, ylabel, series, xlog=False, ylog=False, note=""):
    """series: [(name, [(x, y)], dashed)]"""
    xs = [x for _, pts, _ in series for x, _ in pts]
    ys = [y for _, pts, _ in series for _, y in pts]
    if xlog:
        xa = Axis(10 ** int(math.log10(min(xs)) // 1), 10 ** math.ceil(math.log10(max(xs))), True, LEFT, WIDTH - RIGHT)
    else:
        xa = Axis(0, max(xs) * 1.05, False, LEFT, WIDTH - RIGHT)
    if ylog:
        ya = Axis(10 ** int(math.log10(min(ys)) // 1), 10 ** math.ceil(math.log10(max(ys))), True, HEIGHT - BOTTOM, TOP)
    else:
        ya = Axis(0, max(ys) * 1.1, False, HEIGHT - BOTTOM, TOP)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{esc(title)}</text>',
    ]
    for t in xa.ticks():
        x = xa(t)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{label(t)}</text>')
    for t in ya.ticks():
        y = ya(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label(t)}</text>')
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
        'fill="none" stroke="#444"/>'
    )
    out.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle">{esc(xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{esc(ylabel)}</text>'
    )
    for i, (name, pts, dashed) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        pts = sorted(pts)
        d = " ".join(f"{xa(x):.1f},{ya(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{xa(x):.1f}" cy="{ya(y):.1f}" r="3" fill="{colour}"/>')
        ly = TOP + 14 + 18 * i
        lx = WIDTH - RIGHT + 12
        out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 18}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 24}" y="{ly}">{esc(name)}</text>')
    if note:
        for j, part in enumerate(note.split("\n")):
            out.append(f'<text x="{WIDTH - RIGHT + 12}" y="{HEIGHT - BOTTOM - 30 + 14 * j}" font-size="10" fill="#555">{esc(part)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def matching():
    data = rows("matching.csv")
    series = []
    for matcher, dashed in (("grid", False), ("naive", True)):
        for city in ("uniform", "clustered"):
            pts = [(int(r["n"]), float(r["ms"])) for r in data if r["matcher"] == matcher and r["city"] == city]
            if pts:
                series.append((f"{matcher}, {city}", pts, dashed))
    plot(
        os.path.join(DATA, "matching.svg"),
        "One matching round: n riders x n drivers, one core",
        "n (riders, and as many drivers)",
        "milliseconds per round",
        series,
        xlog=True,
        ylog=True,
        note="cargo bench -p node\n--bench matching",
    )


def latency():
    data = rows("latency-vs-rate.csv")

    def pts(setup, column):
        return [(int(r["offered_per_s"]), float(r[column])) for r in data if r["setup"] == setup and r[column]]

    plot(
        os.path.join(DATA, "latency-vs-rate.svg"),
        "Intake p99 against offered rate: three-region mesh and one node",
        "requests per second offered",
        "p99 latency, ms",
        [
            ("mesh, generators' p99", pts("mesh", "bot_p99_ms"), False),
            ("mesh, nodes' own p99", pts("mesh", "nodes_p99_ms"), True),
            ("one node, generators' p99", pts("single", "bot_p99_ms"), False),
        ],
        note="scripts/bench-overload.sh\nRATE 10s 256 (6a0cece)",
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(__doc__)
    matching()
    latency()
