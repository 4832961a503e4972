"""The overview's charts, drawn on the server as SVG by pygal (no script, nothing fetched).

Each chart is inline SVG with a ``<title>`` and a table of the same figures beside it in
the page, for screen readers and for reading exact values.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from xml.etree import ElementTree

import pygal
from markupsafe import Markup
from pygal.style import Style

from admin.overview import HOURS_SHOWN, DayTokens
from app.jobs.stats import HourCount

_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1b1f24",
    foreground_strong="#1b1f24",
    foreground_subtle="#d8dce2",
    font_family="system-ui, sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    colors=("#1f5fbf", "#2a9d8f", "#e76f51", "#8a5a00", "#6c4f9e", "#5b6470"),
)
_COMMON = {
    "style": _STYLE,
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


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    """The chart's SVG without pygal's inline config script (the page runs none)."""
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if child.tag == "script":
                parent.remove(child)
    return Markup(ElementTree.tostring(tree, encoding="unicode"))


def tokens_per_day(days: list[DayTokens]) -> Markup:
    chart = pygal.Bar(title="Tokens per day (UTC)", **_COMMON)
    chart.x_labels = [d.day.strftime("%m-%d") for d in days]
    if len(days) > 10:
        chart.x_labels_major = chart.x_labels[:: max(1, len(days) // 6)]
    for name in DAY_SERIES:
        chart.add(name, [d.tokens[name] for d in days])
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
    chart = pygal.StackedBar(title=f"Jobs per hour, last {HOURS_SHOWN} h (UTC)", **_COMMON)
    chart.x_labels = [hour.strftime("%H:00") for hour, _ in hours]
    chart.x_labels_major = chart.x_labels[::4]
    for status in HOUR_STATUSES:
        chart.add(status, [counts[status] for _, counts in hours])
    return _svg(chart)
