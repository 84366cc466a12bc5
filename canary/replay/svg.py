"""Small SVG line charts, drawn here so that the report needs no network and no plotting library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

COLORS = {"canary": "#d6402b", "stable": "#2b6cd6", "weight": "#333333", "mirror": "#8a4fd6", "threshold": "#777777"}
EVIDENCE = ("#d6402b", "#c27c0e", "#19703a", "#8a4fd6")  # one per metric on the e-value chart


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: str
    step: bool = False  # a value that holds until the next point (a weight), not a measurement
    dashed: bool = False


@dataclass(frozen=True)
class Marker:
    x: float
    label: str


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    markers: Sequence[Marker] = (),
    y_max: float | None = None,
    y_min: float = 0.0,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    width: int = 640,
    height: int = 220,
) -> str:
    left, right, top, bottom = 56, 16, 28, 42
    xs = [x for s in series for x, _ in s.points] + [m.x for m in markers]
    ys = [y for s in series for _, y in s.points]
    x_max = max(xs, default=1.0) or 1.0
    top_y = y_max if y_max is not None else (max(ys, default=0.0) * 1.15 or 1.0)
    if top_y <= y_min:
        top_y = y_min + 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - (min(max(y, y_min), top_y) - y_min) / (top_y - y_min))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>',
    ]
    for i in range(5):
        value = y_min + (top_y - y_min) * i / 4
        y = py(value)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(y_format(value))}</text>')
    for i in range(6):
        x = x_max * i / 5
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x:.0f} s</text>')
    for i, m in enumerate(markers):  # labels step down so that close markers stay readable
        x = px(m.x)
        near_right = x > left + 0.75 * plot_w
        anchor = ' text-anchor="end"' if near_right else ""
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#999" stroke-dasharray="2,3"/>'
            f'<text x="{x - 3 if near_right else x + 3:.1f}" y="{top + 10 + 11 * (i % 4)}" fill="#555"'
            f"{anchor}>{escape(m.label)}</text>"
        )
    for s in series:
        if not s.points:
            continue
        coords: list[str] = []
        previous: tuple[float, float] | None = None
        for x, y in s.points:
            if s.step and previous is not None:
                coords.append(f"{px(x):.1f},{py(previous[1]):.1f}")
            coords.append(f"{px(x):.1f},{py(y):.1f}")
            previous = (x, y)
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        out.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="2"{dash} points="{" ".join(coords)}"/>')
    for i, s in enumerate(series):
        x = left + 8 + i * 150
        out.append(
            f'<line x1="{x}" x2="{x + 18}" y1="{height - 8}" y2="{height - 8}" stroke="{s.color}" stroke-width="2"/>'
            f'<text x="{x + 22}" y="{height - 4}">{escape(s.name)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
