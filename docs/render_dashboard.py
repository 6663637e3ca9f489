#!/usr/bin/env python3
"""Draws the Grafana dashboard's panels into one PNG, without Grafana.

It reads the dashboard JSON (observability/grafana/dashboards/platform.json), runs each panel's
PromQL against a running Prometheus through its HTTP API (`/api/v1/query_range`), and draws each
panel where the dashboard's grid puts it: a time series as lines, a stat as its latest values.
docs/images/dashboard.png is made by it; docs/observability.md says how to run it again.

The dashboard's Grafana variables are given values a plain query can take: `$__rate_interval`
becomes --rate-interval, `$component` matches every component, `${datasource}` is unused.

Needs matplotlib (`python3 -m venv /tmp/dash && /tmp/dash/bin/pip install matplotlib`); the
rest is the standard library.

    /tmp/dash/bin/python docs/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --minutes 5 --rate-interval 30s --out docs/images/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "observability/grafana/dashboards/platform.json"

# Grafana's dark theme, near enough.
BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
MUTED = "#8e8e9a"
GRID = "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#fade2a", "#96d98d", "#ffb357", "#ff7383", "#c0d8ff"]

# Inches per grid unit: 24 columns across, rows of Grafana's 30 px.
COLUMN_INCHES = 0.75
ROW_INCHES = 0.36
# Series a time series' legend lists at most, and the height of one line of it, in inches.
LEGEND_SHOWN = 6
LEGEND_LINE_INCHES = 0.13


def substitute(expr: str, rate_interval: str) -> str:
    """The query with the dashboard's variables replaced by values Prometheus takes."""
    return (expr.replace("$__rate_interval", rate_interval)
                .replace("${component}", ".+")
                .replace("$component", ".+"))


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list:
    """The series a range query answers, as Prometheus's `result` list."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(template: str, labels: dict) -> str:
    """Grafana's legend format: `{{label}}` replaced by the series' label."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template or "")
    text = " ".join(text.split())
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def format_value(value: float, unit: str) -> str:
    """A value as the panel's unit shows it."""
    if unit == "bool_yes_no":
        return "yes" if value >= 0.5 else "no"
    if unit == "percentunit":
        return f"{value * 100:.1f} %"
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.1f} ms"
        return f"{value:.2f} s"
    if unit in ("reqps", "ops"):
        return f"{value:.1f}/s"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def style(axes, title: str) -> None:
    axes.set_facecolor(PANEL)
    axes.set_title(title, color=TEXT, fontsize=9, loc="left", pad=4)
    for spine in axes.spines.values():
        spine.set_color(GRID)
    axes.tick_params(colors=MUTED, labelsize=7)


def legend_layout(series: list, columns: int) -> tuple[int, int]:
    """(columns, lines) of a time series' legend under its chart: wider panels take more."""
    shown = min(len(series), LEGEND_SHOWN)
    across = 3 if columns >= 12 else 2 if columns >= 8 else 1
    across = min(across, max(shown, 1))
    return across, -(-shown // across)


def draw_timeseries(axes, panel: dict, series: list, unit: str, legend_columns: int) -> None:
    style(axes, panel["title"])
    axes.grid(True, color=GRID, linewidth=0.5)
    if not series:
        axes.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center",
                  transform=axes.transAxes, fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
        return
    for index, (name, points) in enumerate(series):
        times = [datetime.fromtimestamp(t) for t, _ in points]
        values = [v for _, v in points]
        axes.plot(times, values, color=PALETTE[index % len(PALETTE)], linewidth=1.2, label=name)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=6)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    axes.yaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: format_value(v, unit)))
    axes.set_ylim(bottom=0)
    handles, labels = axes.get_legend_handles_labels()
    if len(labels) > LEGEND_SHOWN:
        more = len(series) - LEGEND_SHOWN + 1
        handles, labels = handles[:LEGEND_SHOWN], labels[:LEGEND_SHOWN - 1] + [f"… {more} more"]
    # Under the chart, below the time axis's labels, as Grafana puts it.
    below = 0.2 / axes.get_position().height / axes.figure.get_figheight()
    axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(0, -below), fontsize=6,
                labelcolor=TEXT, frameon=False, ncol=legend_columns, borderaxespad=0,
                handlelength=1.2, columnspacing=1.2)


def draw_stat(axes, panel: dict, series: list, unit: str) -> None:
    style(axes, panel["title"])
    axes.set_xticks([])
    axes.set_yticks([])
    if not series:
        axes.text(0.5, 0.45, "No data", color=MUTED, ha="center", va="center",
                  transform=axes.transAxes, fontsize=10)
        return
    count = len(series)
    for index, (name, points) in enumerate(series):
        value = points[-1][1] if points else float("nan")
        x = (index + 0.5) / count
        color = PALETTE[index % len(PALETTE)]
        axes.text(x, 0.5, format_value(value, unit), color=color, ha="center", va="center",
                  transform=axes.transAxes, fontsize=16 if count <= 4 else 11, fontweight="bold")
        axes.text(x, 0.15, name.replace(" ", "\n", 1) if count > 2 else name, color=MUTED,
                  ha="center", va="center", transform=axes.transAxes, fontsize=6)


def panel_series(panel: dict, args, start: float, end: float, step: float) -> list:
    """(legend, [(time, value), …]) for every series of every target of the panel."""
    series = []
    for target in panel.get("targets", []):
        expr = substitute(target["expr"], args.rate_interval)
        for result in query_range(args.prometheus, expr, start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"]
                      if v not in ("NaN", "+Inf", "-Inf")]
            if points:
                series.append((legend(target.get("legendFormat", ""), result["metric"]), points))
    return series


def render(args) -> None:
    dashboard = json.loads(Path(args.dashboard).read_text())
    end = time.time()
    start = end - args.minutes * 60
    step = max(1.0, (end - start) / 240)
    panels = dashboard["panels"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width, height = 24 * COLUMN_INCHES, bottom * ROW_INCHES + 0.6
    figure = plt.figure(figsize=(width, height), facecolor=BACKGROUND)
    figure.text(0.01, 1 - 0.25 / height, dashboard["title"], color=TEXT, fontsize=13,
                va="center", fontweight="bold")
    figure.text(0.99, 1 - 0.25 / height,
                f"last {args.minutes:g} min, rate interval {args.rate_interval}",
                color=MUTED, fontsize=8, va="center", ha="right")
    top = 0.6 / height
    gap = 0.08
    for panel in panels:
        grid = panel["gridPos"]
        left = (grid["x"] * COLUMN_INCHES + gap) / width
        panel_width = (grid["w"] * COLUMN_INCHES - 2 * gap) / width
        if panel["type"] == "row":
            figure.text(left, 1 - top - (grid["y"] + 0.6) * ROW_INCHES / height, panel["title"],
                        color=TEXT, fontsize=10, fontweight="bold", va="center")
            continue
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        series = panel_series(panel, args, start, end, step)
        legend_columns, legend_lines = legend_layout(series, grid["w"])
        if panel["type"] == "stat":
            legend_lines = 0
        # Room inside the panel's cell for its title, the time axis and the legend.
        y_top = grid["y"] * ROW_INCHES + 0.35
        panel_height = grid["h"] * ROW_INCHES - 0.65 - legend_lines * LEGEND_LINE_INCHES
        axes = figure.add_axes((left + 0.35 / width, 1 - top - (y_top + panel_height) / height,
                                panel_width - 0.4 / width, panel_height / height))
        if panel["type"] == "stat":
            draw_stat(axes, panel, series, unit)
        else:
            draw_timeseries(axes, panel, series, unit, legend_columns)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=args.dpi, facecolor=BACKGROUND)
    plt.close(figure)
    shrink(out)
    print(f"{out}: {out.stat().st_size // 1024} KiB, {len(panels)} panels")


def shrink(path: Path) -> None:
    """Rewrites the PNG with a palette of 256 colours, a quarter of the bytes of RGBA."""
    try:
        from PIL import Image  # matplotlib depends on Pillow
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dashboard", default=str(DASHBOARD), help="the dashboard JSON")
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090",
                        help="the Prometheus to query (default %(default)s)")
    parser.add_argument("--minutes", type=float, default=5,
                        help="how far back the charts go (default %(default)s)")
    parser.add_argument("--rate-interval", default="1m",
                        help="what $__rate_interval stands for: four scrape intervals or more "
                             "(default %(default)s, for a 15 s scrape)")
    parser.add_argument("--dpi", type=int, default=90, help="resolution (default %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "docs/images/dashboard.png"),
                        help="the PNG to write (default docs/images/dashboard.png)")
    args = parser.parse_args()
    try:
        render(args)
    except OSError as error:
        print(f"cannot query {args.prometheus}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
