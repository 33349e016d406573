"""Line and bar charts as plain SVG, for the benchmark report (python3 standard library only).

Each function returns the SVG document as a string. Values may be None (not measured): a line
skips the point, a bar is left out. Colours and dashes come with each series so that the same
contender looks the same in every chart.
"""

import math
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 680, 380
MARGIN = dict(left=78, right=24, top=76, bottom=58)
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
AXIS, GRID, TEXT, MUTED = "#374151", "#e5e7eb", "#111827", "#6b7280"


def nice_ticks(high, count=5):
    """Ticks from 0 to at least `high`, on a step of 1, 2 or 5 times a power of ten."""
    if high is None or high <= 0:
        high = 1.0
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    top = step * math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(int(round(top / step)) + 1)]


def tick_label(v, step):
    if v == 0:
        return "0"
    if step >= 1000:
        return f"{v / 1000:g}k"
    if step == int(step):
        return f"{v:,.0f}"
    return f"{v:g}"


def value_label(v):
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


class _Canvas:
    def __init__(self, title, y_label, y_max, note=None):
        self.parts = []
        self.x0, self.x1 = MARGIN["left"], WIDTH - MARGIN["right"]
        self.y0, self.y1 = HEIGHT - MARGIN["bottom"], MARGIN["top"]
        self.ticks = nice_ticks(y_max)
        self.top = self.ticks[-1]
        step = self.ticks[1] - self.ticks[0]
        self.add(f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>')
        self.text(WIDTH / 2, 24, title, size=15, weight="600")
        if note:
            self.text(WIDTH / 2, 42, note, size=11, fill=MUTED)
        for t in self.ticks:
            y = self.y(t)
            self.add(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" stroke="{GRID}"/>')
            self.text(self.x0 - 8, y + 4, tick_label(t, step), size=11, anchor="end", fill=AXIS)
        self.add(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" stroke="{AXIS}"/>')
        self.add(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" stroke="{AXIS}"/>')
        mid = (self.y0 + self.y1) / 2
        self.add(f'<text x="18" y="{mid:.1f}" transform="rotate(-90 18 {mid:.1f})" text-anchor="middle" '
                 f'font-size="12" fill="{TEXT}">{escape(y_label)}</text>')

    def y(self, v):
        return self.y0 - (self.y0 - self.y1) * v / self.top

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="middle", fill=TEXT, weight="normal"):
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
                 f'font-weight="{weight}" fill="{fill}">{escape(str(s))}</text>')

    def x_label(self, s):
        self.text((self.x0 + self.x1) / 2, HEIGHT - 14, s, size=12)

    def target(self, value, label):
        y = self.y(value)
        self.add(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" stroke="#b91c1c" '
                 f'stroke-width="1.5" stroke-dasharray="6 4"/>')
        # Left-aligned with a white halo: readable where it crosses a bar.
        self.add(f'<text x="{self.x0 + 6:.1f}" y="{y - 5:.1f}" text-anchor="start" font-size="11" '
                 f'fill="#b91c1c" stroke="#ffffff" stroke-width="3" paint-order="stroke">{escape(label)}</text>')

    def legend(self, series):
        # One row above the plot area, centred.
        widths = [34 + 7 * len(s["name"]) for s in series]
        x = (WIDTH - sum(widths)) / 2
        y = MARGIN["top"] - 14
        for s, w in zip(series, widths):
            dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
            if s.get("kind") == "bar":
                self.add(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="18" height="10" fill="{s["color"]}"/>')
            else:
                self.add(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 18:.1f}" y2="{y - 4:.1f}" '
                         f'stroke="{s["color"]}" stroke-width="2.5"{dash}/>')
            self.text(x + 24, y, s["name"], size=12, anchor="start")
            x += w

    def svg(self):
        body = "\n".join(self.parts)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
                f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="{FONT}">\n{body}\n</svg>\n')


def _max(values, extra=None):
    present = [v for v in values if v is not None]
    if extra is not None:
        present.append(extra)
    return max(present) if present else None


def line_chart(title, x_label, y_label, categories, series, note=None):
    """series: [{"name", "color", "dash"?, "values": [float|None per category]}]."""
    canvas = _Canvas(title, y_label, (_max([v for s in series for v in s["values"]]) or 1) * 1.08, note)
    n = len(categories)
    span = canvas.x1 - canvas.x0
    xs = [canvas.x0 + span * (i + 0.5) / n for i in range(n)]
    for x, c in zip(xs, categories):
        canvas.add(f'<line x1="{x:.1f}" y1="{canvas.y0}" x2="{x:.1f}" y2="{canvas.y0 + 5}" stroke="{AXIS}"/>')
        canvas.text(x, canvas.y0 + 19, c, size=11, fill=AXIS)
    canvas.x_label(x_label)
    for s in series:
        points = [(x, canvas.y(v), v) for x, v in zip(xs, s["values"]) if v is not None]
        dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            canvas.add(f'<polyline points="{path}" fill="none" stroke="{s["color"]}" stroke-width="2.5"{dash}/>')
        for x, y, v in points:
            canvas.add(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{s["color"]}">'
                       f'<title>{escape(s["name"])}: {value_label(v)}</title></circle>')
    canvas.legend(series)
    return canvas.svg()


def bar_chart(title, x_label, y_label, groups, series, target=None, note=None):
    """Grouped bars: one group per entry of `groups`, one bar per series in each.
    series: [{"name", "color", "values": [float|None per group]}], with "colors" (one per group)
    instead of "color" when the groups are the contenders; target: (value, label)."""
    values = [v for s in series for v in s["values"]]
    canvas = _Canvas(title, y_label, (_max(values, target[0] if target else None) or 1) * 1.12, note)
    n, k = len(groups), len(series)
    span = canvas.x1 - canvas.x0
    group_w = span / n
    bar_w = min(64.0, group_w * 0.7 / k)
    for i, g in enumerate(groups):
        centre = canvas.x0 + group_w * (i + 0.5)
        canvas.text(centre, canvas.y0 + 19, g, size=11, fill=AXIS)
        left = centre - bar_w * k / 2
        for j, s in enumerate(series):
            v = s["values"][i]
            x = left + j * bar_w
            if v is None:
                canvas.text(x + bar_w / 2, canvas.y0 - 6, "n/m", size=10, fill=MUTED)
                continue
            y = canvas.y(v)
            canvas.add(f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bar_w - 4:.1f}" height="{canvas.y0 - y:.1f}" '
                       f'fill="{s["colors"][i] if "colors" in s else s["color"]}"><title>{escape(s["name"])}, {escape(g)}: {value_label(v)}</title></rect>')
            canvas.text(x + bar_w / 2, y - 5, value_label(v), size=10, fill=AXIS)
    if x_label:
        canvas.x_label(x_label)
    if target:
        canvas.target(*target)
    if k > 1:
        canvas.legend([dict(s, kind="bar") for s in series])
    return canvas.svg()
