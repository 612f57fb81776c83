"""``streamrec status``'s table: one row per live worker, from its status hash and /metrics."""

from __future__ import annotations

from collections.abc import Mapping

COLUMNS = ("WORKER", "MODEL", "PARTITIONS", "EVENTS", "DEAD", "P50 MS", "P99 MS", "HEARTBEAT",
           "WEB", "NOTE")


def _num(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "-" if v is None or v == "" else str(v)


def _age(heartbeat_ms: object, now_ms: int) -> str:
    try:
        age = (now_ms - int(str(heartbeat_ms))) / 1000
    except ValueError:
        return "-"
    return f"{max(age, 0.0):.0f}s ago"


def row(wid: str, w: Mapping[str, object], now_ms: int) -> tuple[str, ...]:
    """A worker's cells; NOTE says what is wrong (unreachable metrics, a blocked dead-letter
    topic, an experiment the worker could not run, clicks logs that began again)."""
    latency = w.get("latency_ms")
    lat: Mapping[str, object] = latency if isinstance(latency, Mapping) else {}
    notes = []
    if "unreachable" in lat:
        notes.append(f"metrics unreachable: {lat['unreachable']}")
    if w.get("dead_letter_blocked"):
        notes.append(f"dead letters blocked: {w['dead_letter_blocked']}")
    if w.get("experiment_error"):
        notes.append(f"experiment: {w['experiment_error']}")
    if w.get("log_resets"):
        notes.append(f"log resets: {w['log_resets']} (last_log_reset in --json)")
    return (wid, _num(w.get("model_version")), _num(w.get("partitions")), _num(w.get("events")),
            _num(w.get("dead_lettered")), _num(lat.get("p50")), _num(lat.get("p99")),
            _age(w.get("heartbeat_at", ""), now_ms), _num(w.get("web")), "; ".join(notes))


def table(report: Mapping[str, Mapping[str, object]], now_ms: int) -> str:
    """The report as aligned columns, a header first."""
    rows = [COLUMNS, *(row(wid, w, now_ms) for wid, w in sorted(report.items()))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(n) for c, n in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
