"""Charts for the admin dashboard, drawn on the server as SVG: no JavaScript, no CDN.

Each chart is an ``<svg role="img">`` named by its ``<title>`` and summed up by its ``<desc>``
(``aria-labelledby`` points at both), and each bar or point carries a ``<title>`` of its own
(the tooltip). The template puts the numbers in a table beside every chart as well.

Colours come from CSS classes (``static/django_authfw/admin.css``) that use the admin's own
variables (``--link-fg``, ``--error-fg``, ``--body-quiet-color``, ``--hairline-color``), so a
chart follows the admin's light and dark themes. Failures are hatched as well as red, and the
revocation line is dashed, so that no series is told apart by colour alone.

The markup is written with f-strings: every text in it (titles, descriptions, tooltips, period
labels) goes through :func:`~django.utils.html.escape`; everything else is a number formatted
here or a CSS class name of this module. (``format_html`` on each of a thousand bars cost more
than the queries behind them.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 760
HEIGHT = 220
LEFT = 52
RIGHT = 12
TOP = 12
BOTTOM = 30
MAX_X_LABELS = 8
PLOT_HEIGHT = HEIGHT - TOP - BOTTOM
PLOT_WIDTH = WIDTH - LEFT - RIGHT


@dataclass(frozen=True, slots=True)
class Serie:
    """One series of a chart: its name (legend, tooltips), CSS class and values."""

    name: str
    css: str
    values: Sequence[int]
    hatched: bool = False


def _n(value: float) -> str:
    """A coordinate: at most two decimals."""
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

    def y(self, value: float) -> float:
        return TOP + PLOT_HEIGHT - PLOT_HEIGHT * value / self.top


def _local(starts: Sequence[datetime]) -> list[datetime]:
    zone: tzinfo = timezone.get_current_timezone()  # once: each lookup is a context read
    return [moment.astimezone(zone) for moment in starts]


def label_positions(local: Sequence[datetime], unit: str) -> list[int]:
    """Which periods get a label under the x axis: round local times, about eight of them."""
    if unit == "minute":
        chosen = [i for i, t in enumerate(local) if t.minute % 10 == 0]
    elif unit == "hour" and len(local) > 48:
        chosen = [i for i, t in enumerate(local) if t.hour == 0 and t.minute == 0]
    elif unit == "hour":
        chosen = [i for i, t in enumerate(local) if t.hour % 3 == 0 and t.minute == 0]
    else:
        chosen = []
    if 2 <= len(chosen) <= MAX_X_LABELS + 1:
        return chosen
    # No round times to use (a zone half an hour off UTC, days): every k-th, ending today.
    every = max(1, math.ceil(len(local) / MAX_X_LABELS))
    return sorted(range(len(local) - 1, -1, -every))


def period_label(local: datetime, unit: str, periods: int) -> str:
    """A short label of a period's start (a local time) under the x axis."""
    if unit == "day" or (unit == "hour" and periods > 48):
        return local.strftime("%b %d")
    return local.strftime("%H:%M")


def period_span(moment: datetime, unit: str) -> str:
    """A period as a tooltip and table row name: ``Nov 29 09:00`` or ``Nov 29`` (days)."""
    local = timezone.localtime(moment)
    return local.strftime("%b %d" if unit == "day" else "%b %d %H:%M")


def _spans(local: Sequence[datetime], unit: str) -> list[str]:
    return [t.strftime("%b %d" if unit == "day" else "%b %d %H:%M") for t in local]


def _frame(
    chart_id: str,
    title: str,
    description: str,
    scale: Scale,
    local: Sequence[datetime],
    unit: str,
    body: str,
) -> SafeString:
    """The SVG element around a plot: gridlines and y labels, x labels, the title and desc."""
    parts = [
        f'<svg class="authfw-chart" id="{chart_id}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>'
        f'<defs><pattern id="{chart_id}-hatch" patternUnits="userSpaceOnUse" width="5" '
        'height="5"><path class="authfw-hatch" d="M-1,1 L1,-1 M0,5 L5,0 M4,6 L6,4"></path>'
        "</pattern></defs>"
    ]
    for value in scale.ticks():
        y = _n(scale.y(value))
        parts.append(
            f'<line class="authfw-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}">'
            f'</line><text class="authfw-axis" x="{LEFT - 6}" y="{_n(scale.y(value) + 4)}" '
            f'text-anchor="end">{value:,}</text>'
        )
    parts.append(body)
    slot = PLOT_WIDTH / max(1, len(local))
    for position in label_positions(local, unit):
        x = min(max(LEFT + slot * (position + 0.5), LEFT + 18), WIDTH - RIGHT - 18)
        label = escape(period_label(local[position], unit, len(local)))
        parts.append(
            f'<text class="authfw-axis" x="{_n(x)}" y="{HEIGHT - 10}" '
            f'text-anchor="middle">{label}</text>'
        )
    base = TOP + PLOT_HEIGHT
    parts.append(
        f'<line class="authfw-baseline" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" '
        f'y2="{base}"></line></svg>'
    )
    return mark_safe("".join(parts))  # noqa: S308 (texts escaped above, the rest is ours)


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
    local = _local(starts)
    spans = _spans(local, unit)
    slot = PLOT_WIDTH / max(1, len(starts))
    width = _n(max(1.0, slot * 0.8))
    names = [escape(s.name.lower()) for s in series]
    groups = []
    for position in range(len(starts)):
        x = _n(LEFT + slot * position + slot * 0.1)
        base = float(TOP + PLOT_HEIGHT)
        tooltip = ", ".join(f"{s.values[position]:,} {names[i]}" for i, s in enumerate(series))
        group = [f"<g><title>{escape(spans[position])}: {tooltip}</title>"]
        for serie in series:
            value = serie.values[position]
            if not value:
                continue
            height = PLOT_HEIGHT * value / scale.top
            base -= height
            box = f'x="{x}" y="{_n(base)}" width="{width}" height="{_n(height)}"'
            group.append(f'<rect class="{escape(serie.css)}" {box}></rect>')
            if serie.hatched:  # told apart by more than its colour
                group.append(f'<rect fill="url(#{chart_id}-hatch)" {box}></rect>')
        group.append("</g>")
        groups.append("".join(group))
    return _frame(chart_id, title, description, scale, local, unit, "".join(groups))


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
    local = _local(starts)
    spans = [escape(span) for span in _spans(local, unit)]
    slot = PLOT_WIDTH / max(1, len(starts))
    radius = 2.5 if len(starts) <= 60 else 1.5
    drawn = []
    for serie in series:
        name, css = escape(serie.name.lower()), escape(serie.css)
        points = [
            (_n(LEFT + slot * (position + 0.5)), _n(scale.y(value)))
            for position, value in enumerate(serie.values)
        ]
        drawn.append(
            f'<polyline class="{css}" points="{" ".join(f"{x},{y}" for x, y in points)}">'
            "</polyline>"
        )
        drawn.extend(
            f'<circle class="{css}" cx="{x}" cy="{y}" r="{radius}">'
            f"<title>{spans[i]}: {value:,} {name}</title></circle>"
            for i, ((x, y), value) in enumerate(zip(points, serie.values, strict=True))
        )
    return _frame(chart_id, title, description, scale, local, unit, "".join(drawn))


def bar(value: int, peak: int, css: str, *, second: int = 0, second_css: str = "") -> SafeString:
    """A small horizontal bar for a table row (hidden from screen readers: the row's cells say
    the numbers); ``second`` stacks a second part after the first."""
    width = 160
    scale = width / max(1, peak)
    first = value * scale
    parts = [f'<rect class="{escape(css)}" x="0" y="2" width="{_n(first)}" height="12"></rect>']
    if second:
        parts.append(
            f'<rect class="{escape(second_css)}" x="{_n(first)}" y="2" '
            f'width="{_n(second * scale)}" '
            'height="12"></rect>'
        )
    return mark_safe(  # noqa: S308 (numbers and escaped class names only)
        f'<svg class="authfw-rowbar" aria-hidden="true" focusable="false" width="{width}" '
        f'height="16" viewBox="0 0 {width} 16" xmlns="http://www.w3.org/2000/svg">'
        f"{''.join(parts)}</svg>"
    )


def describe_peak(starts: Sequence[datetime], values: Sequence[int], unit: str, what: str) -> str:
    """``"Busiest: Nov 29 09:00 with 1,234 events."``, or that there were none."""
    if not values or max(values) == 0:
        return f"No {what} in this window."
    position = max(range(len(values)), key=values.__getitem__)
    return f"Busiest: {period_span(starts[position], unit)} with {values[position]:,} {what}."
