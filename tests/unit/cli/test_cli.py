"""Unit tests of :mod:`cli`: help grouped by job, usage errors named, settings built once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from cli.base import settings

runner = CliRunner()

JOBS = {
    "Running": ["worker", "replay", "recs", "status", "demo"],
    "Models": ["publish", "models", "rollback"],
    "Data and evaluation": ["generate", "train", "evaluate"],
    "Benchmarks": ["bench", "bench-index", "bench-swap", "bench-state"],
}


def test_help_groups_every_command_by_job() -> None:
    out = runner.invoke(app, ["--help"], terminal_width=200).output
    panels = [line for line in out.splitlines() if line.startswith("╭─ ")]
    assert [p.split("─ ")[1].split(" ─")[0] for p in panels] == ["Options", *JOBS]
    for job, commands in JOBS.items():
        section = out.split(f"╭─ {job} ")[1].split("╰")[0]
        for command in commands:
            assert f"│ {command} " in section, (job, command)


@pytest.mark.parametrize(("args", "message"), [
    (["train"], "give exactly one of --data PATH, --synthetic or --from-topic"),
    (["train", "--synthetic", "--data", "x.txt"], "give exactly one of"),
    (["train", "--synthetic", "--dim", "30", "--heads", "4"], "dim 30 must be divisible by heads 4"),
    (["train", "--synthetic", "--config", "nope.toml"], "config file nope.toml does not exist"),
    (["train", "--synthetic", "--ranker", "--refit"], "needs the retrieval model without a refit"),
    (["train", "--synthetic", "--ranker", "--model", "bpr"], "--ranker ranks a sequence model's candidates"),
    (["bench", "--rates", "1000,fast"], "--rates must be numbers, comma-separated; got '1000,fast'"),
    (["bench", "--rates", "0,max"], "--rates must be positive numbers"),
    (["bench", "--workers", "1,two"], "--workers must be numbers, comma-separated; got '1,two'"),
    (["bench", "--workers", "0"], "--workers must be positive numbers"),
    (["bench", "--workers", "1,17"], "--workers: at most 16 worker processes; got '1,17'"),
    (["bench-index", "--sizes", "10,x"], "--sizes must be numbers"),
    (["publish", "/nonexistent/bundle"], "/nonexistent/bundle is not a bundle directory"),
    (["evaluate", "/nonexistent/bundle", "--data", "x.txt"], "is not a bundle directory"),
    (["experiment", "start", "x", "--arm", "control"], "expected NAME=VERSION"),
    (["experiment", "start", "x", "--arm", "a=v1:half"], "cannot read 'half'"),
    (["simulate", "--a", "/nonexistent/bundle", "--b", "popular"], "not a bundle directory"),
    (["simulate", "--a", "popular", "--b", "popular"], "at least one arm needs a bundle"),
    (["train", "--model", "twotower", "--synthetic", "--norm", "post"], "model twotower has no such setting: --norm"),
    (["train", "--model", "bpr", "--synthetic", "--max-len", "20"], "model bpr has no such setting: --max-len"),
])
def test_usage_errors_exit_2_and_say_what_is_wrong(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_todays_command_names_and_flags_still_parse() -> None:
    """Users' scripts call these: each must reach its own validation, not a usage error."""
    for args in (["train", "--help"], ["bench", "--help"], ["bench-index", "--help"],
                 ["bench-swap", "--help"], ["bench-state", "--help"], ["rollback", "--help"],
                 ["replay", "--help"], ["recs", "--help"], ["status", "--help"],
                 ["worker", "--help"], ["demo", "--help"], ["models", "--help"]):
        assert runner.invoke(app, args).exit_code == 0, args
    flags = runner.invoke(app, ["train", "--help"], terminal_width=300).output
    for flag in ("--from-topic", "--since", "--max-minutes", "--hard-negatives", "--refit",
                 "--mask-seen", "--lowpass", "--index-type", "--publish", "--json"):
        assert flag in flags


def test_generate_writes_a_sequence_file(tmp_path: Path) -> None:
    out = tmp_path / "clicks.txt"
    result = runner.invoke(app, ["generate", "--out", str(out), "--users", "20", "--items", "30"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 20 and all(len(line.split()) >= 2 for line in lines)


def test_settings_are_built_once() -> None:
    assert settings() is settings()


def test_bench_new_items_needs_a_bundle_that_can_embed_them(tiny_bundle_dir: Path) -> None:
    result = runner.invoke(app, ["bench", "--bundle", str(tiny_bundle_dir), "--new-items", "5",
                                 "--rates", "max", "--no-naive"])
    assert result.exit_code == 2, result.output
    assert "--new-items needs a bundle that can embed new items" in result.output


def test_bench_new_items_take_the_attributes_of_bundle_items(tiny_tower_bundle: Path,
                                                             tiny_bundle_dir: Path) -> None:
    import numpy as np

    from bench.funnel import new_item_records
    from serving.bundle import load_bundle

    bundle = load_bundle(tiny_tower_bundle)
    records = new_item_records(bundle, 7, np.random.default_rng(0), ts_ms=123)
    assert [r.item_id for r in records] == [f"bench-new-{k}" for k in range(7)]
    known = {tuple(v) for v in bundle.attributes.values()}
    assert all(r.ts == 123 and r.attributes and tuple(r.attributes) in known for r in records)
    assert new_item_records(load_bundle(tiny_bundle_dir), 7, np.random.default_rng(0)) == []


def test_cold_start_rows_name_the_gate_to_set_on_the_workers() -> None:
    from cli.data import _gate_setting

    assert _gate_setting({"min_key": 1.0767}) == "   (STREAMREC_RERANK_NEW_ITEM_MIN_KEY=1.0767)"
    assert _gate_setting({"within": 200}) == "   (STREAMREC_RERANK_NEW_ITEM_WITHIN=200)"
    assert _gate_setting({"cold": {}}) == ""


def test_version_prints_the_installed_distributions_version() -> None:
    from importlib import metadata

    import streamrec

    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"streamrec {metadata.version('streamrec')}"
    assert metadata.version("streamrec") == streamrec.__version__


def test_an_unreachable_redis_is_one_error_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import sys

    from cli import main

    with socket.socket() as s:  # a loopback port nothing listens on once this is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.cache_clear()
    monkeypatch.setenv("STREAMREC_REDIS_URL", f"redis://u:hunter2@127.0.0.1:{port}/0")
    monkeypatch.setattr(sys, "argv", ["streamrec", "status"])
    with pytest.raises(SystemExit) as exit_:
        main()
    settings.cache_clear()
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert f"error: Redis is unreachable (ConnectionError: Error 111 connecting to 127.0.0.1:{port}" in err
    assert "Traceback" not in err and "hunter2" not in err


def test_refused_credentials_and_an_unreachable_cluster_are_one_line_each(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import sys

    from redis.exceptions import AuthenticationError

    from cli import main

    code, err = _status_when_redis_raises(monkeypatch, capsys, AuthenticationError("invalid username-password pair"))
    assert code == 1 and "error: Redis refused the credentials (invalid username-password pair" in err
    monkeypatch.setattr(sys, "argv", ["streamrec", "status"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.cache_clear()
    monkeypatch.setenv("STREAMREC_REDIS_CLUSTER", "true")
    monkeypatch.setenv("STREAMREC_REDIS_URL", f"redis://u:hunter2@127.0.0.1:{port}/0")
    with pytest.raises(SystemExit) as exit_:
        main()
    settings.cache_clear()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "error: Redis is unreachable (RedisClusterException" in err
    assert "Traceback" not in err and "hunter2" not in err


def _status_when_redis_raises(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                              error: Exception) -> tuple[object, str]:
    """``streamrec status`` run through ``cli.main`` with Redis failing as ``error``: the
    exit code and what it printed."""
    import sys

    from cli import main
    from serving.reader import RecsReader

    def fail(*_: object, **__: object) -> RecsReader:
        raise error

    settings.cache_clear()
    monkeypatch.setattr(sys, "argv", ["streamrec", "status"])
    with monkeypatch.context() as m:
        m.setattr(RecsReader, "from_url", fail)
        with pytest.raises(SystemExit) as exit_:
            main()
    settings.cache_clear()
    return exit_.value.code, capsys.readouterr().err


def test_a_cluster_that_refuses_is_told_apart_from_one_that_is_down(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from redis.exceptions import AuthenticationError, RedisClusterException

    def wrapped(cause: Exception | None, text: str) -> RedisClusterException:
        e = RedisClusterException(f"Redis Cluster cannot be connected. Please provide at least one reachable node: {text}")
        e.__cause__ = cause
        return e

    said = {}
    for name, error in {
        "credentials": wrapped(AuthenticationError("invalid username-password pair"), "invalid username-password pair"),
        "not_cluster": wrapped(None, "Cluster mode is not enabled on this node"),
        "down": wrapped(None, "Error 111 connecting to 127.0.0.1:7000. Connection refused."),
    }.items():
        code, said[name] = _status_when_redis_raises(monkeypatch, capsys, error)
        assert code == 1, name
    assert "error: Redis Cluster refused the credentials" in said["credentials"]
    assert "is not in cluster mode (set STREAMREC_REDIS_CLUSTER=false" in said["not_cluster"]
    assert "error: Redis is unreachable (RedisClusterException" in said["down"]


def test_invalid_settings_name_their_variables(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from cli import main

    settings.cache_clear()
    monkeypatch.setenv("STREAMREC_TOP_N", "many")
    monkeypatch.setattr(sys, "argv", ["streamrec", "status"])
    with pytest.raises(SystemExit) as exit_:
        main()
    settings.cache_clear()
    assert exit_.value.code == 2
    assert "error: invalid settings: STREAMREC_TOP_N='many': Input should be a valid integer" in capsys.readouterr().err
