"""Charts for the admin dashboard, drawn on the server as SVG: no JavaScript, no CDN.

Each chart is an ``<svg role="img">`` named by its ``<title>`` and summed up by its ``<desc>``
(``aria-labelledby`` points at both), and each bar or point carries a ``<title>`` of its own
(the tooltip). The template puts the numbers in a table beside every chart as well.

Colours come from CSS classes (``static/django_authfw/dashboard.css``) that use the admin's
own variables (``--link-fg``, ``--error-fg``, ``--body-quiet-color``, ``--hairline-color``), so a
chart follows the admin's light and dark themes. Failures are hatched as well as red, and the
revocation line is dashed, so that no series is told apart by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 760
HEIGHT = 220
LEFT = 52
RIGHT = 12
TOP = 12
BOTTOM = 30
MAX_X_LABELS = 8


@dataclass(frozen=True, slots=True)
class Serie:
    """One series of a chart: its name (legend, tooltips), CSS class and values."""

    name: str
    css: str
    values: Sequence[int]
    hatched: bool = False


def _n(value: float) -> str:
    # Coordinates with two decimals; format_html escapes its arguments into strings, so
    # numbers are formatted before they get there.
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Scale:
    """The y axis: gridlines every ``step`` from 0 to ``top`` (at most 5 of them)."""

    step: int
    top: int

    @classmethod
    def of(cls, largest: int) -> Scale:
        """The scale of round steps (1, 2, 5, 10, 20, 50, ...) that holds ``largest``."""
        wanted = max(1, math.ceil(largest / 4))
        magnitude = int("1" + "0" * (len(str(wanted)) - 1))  # 345 -> 100
        step = next(f * magnitude for f in (1, 2, 5, 10) if f * magnitude >= wanted)
        return cls(step, step * max(1, math.ceil(largest / step)))

    def ticks(self) -> range:
        return range(0, self.top + 1, self.step)


def label_positions(starts: Sequence[datetime], unit: str) -> list[int]:
    """Which periods get a label under the x axis: round local times, about eight of them."""
    local = [timezone.localtime(moment) for moment in starts]
    if unit == "minute":
        chosen = [i for i, t in enumerate(local) if t.minute % 10 == 0]
    elif unit == "hour" and len(starts) > 48:
        chosen = [i for i, t in enumerate(local) if t.hour == 0 and t.minute == 0]
    elif unit == "hour":
        chosen = [i for i, t in enumerate(local) if t.hour % 3 == 0 and t.minute == 0]
    else:
        chosen = []
    if 2 <= len(chosen) <= MAX_X_LABELS + 1:
        return chosen
    # No round times to use (a zone half an hour off UTC, days): every k-th, ending today.
    every = max(1, math.ceil(len(starts) / MAX_X_LABELS))
    return sorted(range(len(starts) - 1, -1, -every))


def period_label(moment: datetime, unit: str, window_buckets: int) -> str:
    """A short label of a period's start, in the admin's time zone."""
    local = timezone.localtime(moment)
    if unit == "day" or (unit == "hour" and window_buckets > 48):
        return local.strftime("%b %d")
    return local.strftime("%H:%M")


def period_span(moment: datetime, unit: str) -> str:
    """A period as a tooltip and table row name: ``Nov 29 09:00`` or ``Nov 29`` (days)."""
    local = timezone.localtime(moment)
    return local.strftime("%b %d" if unit == "day" else "%b %d %H:%M")


def _frame(
    chart_id: str,
    title: str,
    description: str,
    scale: Scale,
    starts: Sequence[datetime],
    unit: str,
    body: SafeString,
) -> SafeString:
    """The SVG element around a plot: gridlines and y labels, x labels, the title and desc."""
    plot_height = HEIGHT - TOP - BOTTOM
    plot_width = WIDTH - LEFT - RIGHT
    grid = []
    for value in scale.ticks():
        y = TOP + plot_height - plot_height * value / scale.top
        grid.append(
            format_html(
                '<line class="authfw-grid" x1="{}" x2="{}" y1="{}" y2="{}"></line>'
                '<text class="authfw-axis" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                _n(y),
                _n(y),
                LEFT - 6,
                _n(y + 4),
                f"{value:,}",
            )
        )
    slot = plot_width / max(1, len(starts))
    labels = [
        format_html(
            '<text class="authfw-axis" x="{}" y="{}" text-anchor="middle">{}</text>',
            _n(min(max(LEFT + slot * (position + 0.5), LEFT + 18), WIDTH - RIGHT - 18)),
            HEIGHT - 10,
            period_label(starts[position], unit, len(starts)),
        )
        for position in label_positions(starts, unit)
    ]
    return format_html(
        '<svg class="authfw-chart" id="{id}" role="img" aria-labelledby="{id}-title {id}-desc" '
        'viewBox="0 0 {w} {h}" preserveAspectRatio="xMidYMid meet" '
        'xmlns="http://www.w3.org/2000/svg">'
        '<title id="{id}-title">{title}</title><desc id="{id}-desc">{desc}</desc>'
        '<defs><pattern id="{id}-hatch" patternUnits="userSpaceOnUse" width="5" height="5">'
        '<path class="authfw-hatch" d="M-1,1 L1,-1 M0,5 L5,0 M4,6 L6,4"></path></pattern></defs>'
        "{grid}{body}{labels}"
        '<line class="authfw-baseline" x1="{left}" x2="{right}" y1="{base}" y2="{base}"></line>'
        "</svg>",
        id=chart_id,
        w=WIDTH,
        h=HEIGHT,
        title=title,
        desc=description,
        grid=mark_safe("".join(grid)),  # noqa: S308 (each part escaped by format_html)
        body=body,
        labels=mark_safe("".join(labels)),  # noqa: S308 (each part escaped by format_html)
        left=LEFT,
        right=WIDTH - RIGHT,
        base=TOP + plot_height,
    )


def stacked_bars(
    chart_id: str,
    title: str,
    description: str,
    starts: Sequence[datetime],
    unit: str,
    series: Sequence[Serie],
) -> SafeString:
    """Bars per period, the series stacked bottom to top in the order given."""
    totals = [sum(values) for values in zip(*(s.values for s in series), strict=True)]
    scale = Scale.of(max(totals, default=0))
    peak = scale.top
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(starts))
    bar = max(1.0, slot * 0.8)
    groups = []
    for position, moment in enumerate(starts):
        x = LEFT + slot * position + (slot - bar) / 2
        base = float(TOP + plot_height)
        parts = []
        for serie in series:
            value = serie.values[position]
            if not value:
                continue
            height = plot_height * value / peak
            base -= height
            parts.append(
                format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}"></rect>',
                    serie.css,
                    _n(x),
                    _n(base),
                    _n(bar),
                    _n(height),
                )
            )
            if serie.hatched:  # told apart by more than its colour
                parts.append(
                    format_html(
                        '<rect fill="url(#{}-hatch)" x="{}" y="{}" width="{}" height="{}"></rect>',
                        chart_id,
                        _n(x),
                        _n(base),
                        _n(bar),
                        _n(height),
                    )
                )
        tooltip = ", ".join(f"{s.values[position]:,} {s.name.lower()}" for s in series)
        groups.append(
            format_html(
                "<g><title>{}: {}</title>{}</g>",
                period_span(moment, unit),
                tooltip,
                mark_safe("".join(parts)),  # noqa: S308 (each part escaped by format_html)
            )
        )
    body = mark_safe("".join(groups))  # noqa: S308 (each part escaped by format_html)
    return _frame(chart_id, title, description, scale, starts, unit, body)


def lines(
    chart_id: str,
    title: str,
    description: str,
    starts: Sequence[datetime],
    unit: str,
    series: Sequence[Serie],
) -> SafeString:
    """One line per series over the periods, with a point (and its tooltip) at each."""
    scale = Scale.of(max((max(s.values, default=0) for s in series), default=0))
    peak = scale.top
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(starts))
    radius = 2.5 if len(starts) <= 60 else 1.5

    def point(position: int, value: int) -> tuple[float, float]:
        return LEFT + slot * (position + 0.5), TOP + plot_height - plot_height * value / peak

    drawn = []
    for serie in series:
        points = [point(position, value) for position, value in enumerate(serie.values)]
        dots = format_html_join(
            "",
            '<circle class="{}" cx="{}" cy="{}" r="{}"><title>{}: {} {}</title></circle>',
            (
                (
                    serie.css,
                    _n(x),
                    _n(y),
                    radius,
                    period_span(starts[i], unit),
                    f"{value:,}",
                    serie.name.lower(),
                )
                for i, ((x, y), value) in enumerate(zip(points, serie.values, strict=True))
            ),
        )
        drawn.append(
            format_html(
                '<polyline class="{}" points="{}"></polyline>{}',
                serie.css,
                " ".join(f"{x:.2f},{y:.2f}" for x, y in points),
                dots,
            )
        )
    body = mark_safe("".join(drawn))  # noqa: S308 (each part escaped by format_html)
    return _frame(chart_id, title, description, scale, starts, unit, body)


def bar(value: int, peak: int, css: str, *, second: int = 0, second_css: str = "") -> SafeString:
    """A small horizontal bar for a table row (hidden from screen readers: the row's cells say
    the numbers); ``second`` stacks a second part after the first."""
    width = 160
    scale = width / max(1, peak)
    first_width = value * scale
    parts = [
        format_html(
            '<rect class="{}" x="0" y="2" width="{}" height="12"></rect>', css, _n(first_width)
        )
    ]
    if second:
        parts.append(
            format_html(
                '<rect class="{}" x="{}" y="2" width="{}" height="12"></rect>',
                second_css,
                _n(first_width),
                _n(second * scale),
            )
        )
    return format_html(
        '<svg class="authfw-rowbar" aria-hidden="true" focusable="false" width="{}" height="16" '
        'viewBox="0 0 {} 16" xmlns="http://www.w3.org/2000/svg">{}</svg>',
        width,
        width,
        mark_safe("".join(parts)),  # noqa: S308 (each part escaped by format_html)
    )


def describe_peak(starts: Sequence[datetime], values: Sequence[int], unit: str, what: str) -> str:
    """``"Busiest: Nov 29 09:00 with 1,234 events."``, or that there were none."""
    if not values or max(values) == 0:
        return f"No {what} in this window."
    position = max(range(len(values)), key=values.__getitem__)
    return f"Busiest: {period_span(starts[position], unit)} with {values[position]:,} {what}."
