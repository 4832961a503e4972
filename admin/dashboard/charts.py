"""The overview's charts, drawn on the server as SVG by pygal (no script, nothing fetched).

Each chart is inline SVG with a ``<title>`` and a table of the same figures beside it in
the page, for screen readers and for reading exact values.

Drawing is the overview's costliest part (pygal: tens of milliseconds a chart), so:
series with nothing in them are left out of the chart (the table lists them all), no
tooltip data is drawn (pygal's tooltips need its script, which the page does not run),
and a chart drawn for the same figures is reused (a small LRU per process: a reload of
a tenant whose figures did not move draws nothing).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from xml.etree import ElementTree

import pygal
from markupsafe import Markup
from pygal.style import Style

from admin.overview import HOURS_SHOWN, DayTokens
from app.jobs.stats import HourCount

_COLORS = ("#1f5fbf", "#2a9d8f", "#e76f51", "#8a5a00", "#6c4f9e", "#5b6470")
_STYLE_ARGS: dict[str, Any] = dict(
    background="transparent",
    plot_background="transparent",
    foreground="#1b1f24",
    foreground_strong="#1b1f24",
    foreground_subtle="#d8dce2",
    font_family="system-ui, sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
)
_COMMON = {
    "js": [],  # pygal's tooltips script would come from its CDN
    "disable_xml_declaration": True,
    "width": 720,
    "height": 300,
    "legend_at_bottom": True,
    "legend_at_bottom_columns": 5,
    "truncate_label": -1,
    "truncate_legend": -1,
    "min_scale": 2,
    "max_scale": 6,
    "show_minor_x_labels": False,
    "x_label_rotation": 0,
    "print_values": False,
    "margin": 8,
    "value_formatter": lambda v: f"{v:,.0f}" if v == int(v) else f"{v:,.1f}",
}
DAY_SERIES = ("recharged", "granted", "consumed", "refunded", "expired")
HOUR_STATUSES = ("succeeded", "failed", "canceled", "processing", "queued")
CHARTS_KEPT = 256  # charts kept per kind, by their figures


class _NoTooltips:
    """pygal draws each value's tooltip data (``<desc>`` nodes) for its tooltip script;
    without the script they show nothing, and drawing them is a third of the time."""

    def _tooltip_data(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Bar(_NoTooltips, pygal.Bar):
    pass


class _StackedBar(_NoTooltips, pygal.StackedBar):
    pass


def _style(series: list[int]) -> Style:
    """The style of a chart of these series (by their place in the full list): each
    series keeps its colour whichever others are left out."""
    return Style(**_STYLE_ARGS, colors=tuple(_COLORS[n % len(_COLORS)] for n in series))


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    """The chart's SVG without pygal's inline config script (the page runs none)."""
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if child.tag == "script":
                parent.remove(child)
    return Markup(ElementTree.tostring(tree, encoding="unicode"))


def tokens_per_day(days: list[DayTokens]) -> Markup:
    labels = tuple(d.day.strftime("%m-%d") for d in days)
    series = tuple((name, tuple(d.tokens[name] for d in days)) for name in DAY_SERIES)
    return _tokens_chart(labels, series)


@lru_cache(maxsize=CHARTS_KEPT)
def _tokens_chart(
    labels: tuple[str, ...], series: tuple[tuple[str, tuple[int, ...]], ...]
) -> Markup:
    shown = [(n, (name, values)) for n, (name, values) in enumerate(series) if any(values)]
    chart = _Bar(title="Tokens per day (UTC)", style=_style([n for n, _ in shown]), **_COMMON)
    chart.x_labels = list(labels)
    if len(labels) > 10:
        chart.x_labels_major = chart.x_labels[:: max(1, len(labels) // 6)]
    for _, (name, values) in shown:
        chart.add(name, list(values))
    return _svg(chart)


def hour_table(hours: list[HourCount], since: datetime) -> list[tuple[datetime, dict[str, int]]]:
    """Every hour since ``since`` (empty ones too), with its jobs by status."""
    table = {
        since + timedelta(hours=n): dict.fromkeys(HOUR_STATUSES, 0) for n in range(HOURS_SHOWN)
    }
    for row in hours:
        hour = row.hour.replace(tzinfo=since.tzinfo)
        if hour in table and row.status in table[hour]:
            table[hour][row.status] += row.jobs
    return sorted(table.items())


def jobs_per_hour(hours: list[tuple[datetime, dict[str, int]]]) -> Markup:
    labels = tuple(hour.strftime("%H:00") for hour, _ in hours)
    series = tuple(
        (status, tuple(counts[status] for _, counts in hours)) for status in HOUR_STATUSES
    )
    return _jobs_chart(labels, series)


@lru_cache(maxsize=CHARTS_KEPT)
def _jobs_chart(labels: tuple[str, ...], series: tuple[tuple[str, tuple[int, ...]], ...]) -> Markup:
    shown = [(n, (name, values)) for n, (name, values) in enumerate(series) if any(values)]
    chart = _StackedBar(
        title=f"Jobs per hour, last {HOURS_SHOWN} h (UTC)",
        style=_style([n for n, _ in shown]),
        **_COMMON,
    )
    chart.x_labels = list(labels)
    chart.x_labels_major = chart.x_labels[::4]
    for _, (name, values) in shown:
        chart.add(name, list(values))
    return _svg(chart)
