"""Render the streamrec Grafana dashboard's panels to a PNG, from a Prometheus.

Grafana itself is not in Debian's or PyPI's packages, so this draws the dashboard
(deploy/monitoring/grafana/dashboards/streamrec.json) with matplotlib: the same
panels in the same grid, each target's PromQL run through Prometheus's HTTP API
(``query_range`` for time series, ``query`` at the end for tables) with Grafana's
``$__rate_interval`` replaced by ``--rate-interval``, and the legends filled in
from the series' labels as Grafana does. deploy/monitoring/screenshot.sh runs it
against a Prometheus that scraped a real local run.

    python deploy/monitoring/render.py --prometheus http://127.0.0.1:9190 \\
        --start 1796119200 --end 1796119500 --out docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "streamrec.json"
ROW_INCHES = 0.34  # one gridPos height unit
WIDTH_INCHES = 18.0  # the dashboard's 24 columns
# y-axis scale and label per Grafana unit
UNITS: dict[str, tuple[float, str]] = {"s": (1000.0, "ms"), "percentunit": (100.0, "%"),
                                       "ops": (1.0, "per second"), "short": (1.0, "")}


class PrometheusError(RuntimeError):
    pass


def query(base: str, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """One Prometheus API call; its ``data.result``."""
    url = f"{base.rstrip('/')}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
    except OSError as e:
        raise PrometheusError(f"{url}: {e}") from e
    if body.get("status") != "success":
        raise PrometheusError(f"{params.get('query')}: {body.get('error', body)}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: ``{{label}}`` replaced by the series' label value."""
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def expr_for(target: dict[str, Any], rate_interval: str) -> str:
    return str(target["expr"]).replace("$__rate_interval", rate_interval)


def draw_timeseries(ax: Any, panel: dict[str, Any], args: argparse.Namespace) -> int:
    scale, unit = UNITS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"),
                            (1.0, ""))
    lines = 0
    for target in panel["targets"]:
        series = query(args.prometheus, "query_range", {
            "query": expr_for(target, args.rate_interval), "start": str(args.start),
            "end": str(args.end), "step": str(args.step)})
        for s in sorted(series, key=lambda s: sorted(s["metric"].items())):
            xs = [datetime.fromtimestamp(float(t), UTC) for t, _ in s["values"]]
            ys = [float(v) * scale if math.isfinite(float(v)) else math.nan for _, v in s["values"]]
            ax.plot(xs, ys, linewidth=1.4, label=legend(target.get("legendFormat", ""), s["metric"]))
            lines += 1
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
    ax.set_ylabel(unit, fontsize=8)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=7)
    if lines:
        ax.legend(fontsize=7, loc="upper left", ncol=2 if lines > 4 else 1, framealpha=0.6)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return lines


def draw_table(ax: Any, panel: dict[str, Any], args: argparse.Namespace) -> int:
    """Instant queries merged by their common labels, as the panel's merge transformation
    does; the label columns renamed as its organize transformation says."""
    rename: dict[str, str] = {}
    for t in panel.get("transformations", []):
        if t["id"] == "organize":
            rename = t["options"].get("renameByName", {})
    rows: dict[str, dict[str, str]] = {}
    value_cols = []
    for target in panel["targets"]:
        result = query(args.prometheus, "query", {"query": expr_for(target, args.rate_interval),
                                                  "time": str(args.end)})
        if target["refId"] != "A":
            value_cols.append(target["refId"])
        for s in result:
            key = s["metric"].get("instance", "")
            row = rows.setdefault(key, {})
            if target["refId"] == "A":
                row.update(s["metric"])
            else:
                row[target["refId"]] = f"{float(s['value'][1]):.0f} s"
    ax.axis("off")
    if not rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return 0
    label_cols = [c for c in ("instance", "version", "model") if any(c in r for r in rows.values())]
    header = [rename.get(c, c) for c in label_cols] + ["age" for _ in value_cols]
    cells = [[r.get(c, "") for c in label_cols] + [r.get(v, "") for v in value_cols]
             for _, r in sorted(rows.items())]
    table = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.5)
    for (row, _), cell in table.get_celld().items():
        cell.set_facecolor("#2a2d35" if row == 0 else "#181b1f")
        cell.set_edgecolor("#444444")
        cell.get_text().set_color("white")
    return len(cells)


def render(args: argparse.Namespace) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash = json.loads(Path(args.dashboard).read_text())
    panels = dash["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    header_in = 0.6
    height = rows * ROW_INCHES + header_in
    plt.style.use("dark_background")
    fig = plt.figure(figsize=(WIDTH_INCHES, height), dpi=args.dpi)
    span = f"{datetime.fromtimestamp(args.start, UTC):%Y-%m-%d %H:%M} – " \
           f"{datetime.fromtimestamp(args.end, UTC):%H:%M} UTC"
    fig.text(0.01, 1 - 0.35 / height, f"{dash['title']}  ·  {span}  ·  rendered from Prometheus "
             f"by deploy/monitoring/render.py (rate interval {args.rate_interval})", fontsize=11,
             va="center")
    pad_x, pad_top, pad_bottom = 0.012, 0.45, 0.35  # inches-ish margins inside a grid cell
    empty = []
    for p in panels:
        g = p["gridPos"]
        left = g["x"] / 24 + (pad_x * 2.5 if g["x"] == 0 else pad_x * 2)
        width = g["w"] / 24 - pad_x * 3.2
        top_in = header_in + g["y"] * ROW_INCHES
        bottom = 1 - (top_in + g["h"] * ROW_INCHES - pad_bottom) / height
        h = (g["h"] * ROW_INCHES - pad_top - pad_bottom) / height
        ax = fig.add_axes((left, bottom, width, h))
        ax.set_title(p["title"], fontsize=10, loc="left")
        drawn = draw_table(ax, p, args) if p["type"] == "table" else draw_timeseries(ax, p, args)
        if not drawn:
            empty.append(p["title"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    plt.close(fig)
    if empty:
        print(f"render: panels without data: {', '.join(empty)}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL")
    ap.add_argument("--start", type=float, required=True, help="Unix seconds")
    ap.add_argument("--end", type=float, required=True, help="Unix seconds")
    ap.add_argument("--step", type=float, default=5.0, help="seconds between points")
    ap.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for")
    ap.add_argument("--dashboard", default=str(DASHBOARD))
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args(argv)
    if args.end <= args.start:
        ap.error("--end must be after --start")
    try:
        print(render(args))
    except PrometheusError as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
