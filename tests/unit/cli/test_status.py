"""Unit tests of ``streamrec status``'s table (:mod:`cli.status`) and ``worker --loglevel``."""

from __future__ import annotations

from typer.testing import CliRunner

from cli import app
from cli.status import COLUMNS, table

runner = CliRunner()


def test_status_prints_one_aligned_row_per_worker_with_its_problems() -> None:
    now = 1_700_000_010_000
    report = {
        "w2": {"model_version": "v2", "partitions": "4,5,6,7", "events": "10",
               "dead_lettered": "0", "heartbeat_at": str(now - 3_000), "web": "127.0.0.1:6067",
               "latency_ms": {"unreachable": "127.0.0.1:6067: connection refused"},
               "dead_letter_blocked": "KafkaTimeoutError", "log_resets": "2"},
        "w1": {"model_version": "v2", "partitions": "0,1,2,3", "events": "1200",
               "dead_lettered": "3", "heartbeat_at": str(now - 1_000), "web": "127.0.0.1:6066",
               "latency_ms": {"p50": 4.0, "p95": 9.0, "p99": 25.0, "max": 40.0, "count": 1197.0},
               "online": {}},
    }
    lines = table(report, now).splitlines()
    assert lines[0].split() == [c for col in COLUMNS for c in col.split()]
    assert [line.split()[0] for line in lines[1:]] == ["w1", "w2"]  # sorted by id
    assert lines[1].split()[:9] == ["w1", "v2", "0,1,2,3", "1200", "3", "4", "25", "1s",
                                    "ago"]
    assert lines[1].split()[9] == "127.0.0.1:6066"
    # columns line up: every row's model column starts where the header's does
    start = lines[0].index("MODEL")
    assert all(line[start:].startswith("v2") for line in lines[1:])
    assert "metrics unreachable: 127.0.0.1:6067: connection refused" in lines[2]
    assert "dead letters blocked: KafkaTimeoutError" in lines[2]
    assert "log resets: 2" in lines[2] and "log resets" not in lines[1]
    assert lines[2].split()[5:7] == ["-", "-"]  # no percentiles without metrics


def test_a_worker_without_heartbeat_or_counts_prints_dashes() -> None:
    (_, line) = table({"w": {"latency_ms": {}}}, 0).splitlines()
    assert line.split() == ["w", "-", "-", "-", "-", "-", "-", "-", "-"]


def test_loglevel_is_a_choice() -> None:
    result = runner.invoke(app, ["worker", "--loglevel", "loud"])
    assert result.exit_code == 2
    assert "Invalid value for '--loglevel'" in result.output
    assert "debug" in result.output and "critical" in result.output
    helptext = runner.invoke(app, ["worker", "--help"], terminal_width=200).output
    assert "<debug|info|warning|error|c" in helptext  # the choices, wrapped in the help
