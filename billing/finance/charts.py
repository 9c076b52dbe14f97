"""Server-side SVG charts for the finance pages: no JavaScript, no CDN, nothing loaded from outside.

Each chart is a small inline <svg> with a <title> per point (the browser's tooltip) and a legend;
the page puts the same numbers in a table beside it, so the chart is never the only way to read them.
"""

from datetime import date
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import mark_safe

from usage.numbers import number

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 16, 48
# Distinguishable, colour-blind-safe (Okabe-Ito), dark enough on white.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def _nice_max(value: Decimal) -> Decimal:
    """The top of the axis: four grid steps of 1, 2 or 5 times a power of ten (at least 1 each), so
    every tick is a round number at or above the largest value."""
    raw = max(Decimal(value), Decimal(0)) / 4
    step = Decimal(1)
    while step < raw:
        for factor in (2, Decimal("2.5"), 2):  # 1 -> 2 -> 5 -> 10 -> 20 ...
            step *= factor
            if step >= raw:
                break
    return step * 4


def _short(label: str) -> str:
    """ "2026-11" -> "Nov 26"; "2026-11-30" (a week) -> "30 Nov"; anything else as it is."""
    try:
        if len(label) == 7:
            return date.fromisoformat(label + "-01").strftime("%b %y")
        return date.fromisoformat(label).strftime("%d %b")
    except ValueError:
        return label


def _frame(labels: list[str], top: Decimal, unit: str, title: str) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{escape(title)}" class="finance-chart" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # horizontal grid and the value axis
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#333">{number(value)}</text>'
        )
    step = max(1, len(labels) // 12)
    for i, label in enumerate(labels):
        if i % step:
            continue
        x = LEFT + plot_w * (i + 0.5) / max(len(labels), 1)
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" fill="#333">{escape(_short(label))}</text>'
        )
    parts.append(
        f'<text x="12" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 12 {TOP + plot_h / 2:.1f})" '
        f'text-anchor="middle" fill="#333">{escape(unit)}</text>'
    )
    return parts


def _legend(names: list[str]) -> list[str]:
    parts, x = [], LEFT
    for i, name in enumerate(names):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<rect x="{x}" y="{HEIGHT - 18}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT - 9}" fill="#333">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return parts


def line_chart(labels: list[str], series: dict[str, list], *, unit: str, title: str) -> str:
    """One line per series over the labels (months); each point carries its exact value as a tooltip."""
    values = [Decimal(v) for vs in series.values() for v in vs]
    top = _nice_max(max(values, default=Decimal(0)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = _frame(labels, top, unit, title)
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        xy = [
            (LEFT + plot_w * (j + 0.5) / len(labels), TOP + plot_h - plot_h * float(Decimal(v) / top))
            for j, v in enumerate(points)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" data-series="{escape(name)}"/>'
        )
        for (x, y), label, v in zip(xy, labels, points, strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)}, {escape(label)}: {number(v)} {escape(unit)}</title></circle>"
            )
    parts += _legend(list(series))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every label above is escaped


def bar_chart(labels: list[str], series: dict[str, list], *, unit: str, title: str) -> str:
    """Grouped bars: one group per label (week), one bar per series."""
    values = [Decimal(v) for vs in series.values() for v in vs]
    top = _nice_max(max(values, default=Decimal(0)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = _frame(labels, top, unit, title)
    group = plot_w / max(len(labels), 1)
    bar = group * 0.8 / max(len(series), 1)
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        for j, (label, v) in enumerate(zip(labels, points, strict=True)):
            h = plot_h * float(Decimal(v) / top)
            x = LEFT + group * j + group * 0.1 + bar * i
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(name)}, week of {escape(label)}: {number(v)} {escape(unit)}</title></rect>"
            )
    parts += _legend(list(series))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every label above is escaped
