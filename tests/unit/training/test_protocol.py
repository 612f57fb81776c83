"""Unit tests of :mod:`training.protocol`: nothing is chosen from the test split."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from streamrec.errors import ConfigError
from training.data.attributes import build
from training.data.sequences import SequenceData, write_sequences
from training.data.synthetic import SyntheticSpec, generate, item_attributes
from training.protocol import run_protocol, sealed, summarise

SPEC = SyntheticSpec(users=200, items=80, clusters=8, mean_len=10, seed=5)
TOML = """model = "sasrec"
[sasrec]
max_len = 12
dim = 16
layers = 1
heads = 2
dropout = 0.2
lowpass = 0.5
[train]
epochs = 6
patience = 2
batch_size = 64
"""


def other_test_targets(data: SequenceData) -> SequenceData:
    """The same data with every user's last item (the test target) moved to the next user:
    the same items and counts overall, so the vocabulary is unchanged; only the test
    targets differ."""
    last = [s[-1] for s in data.seqs]
    moved = last[1:] + last[:1]
    seqs = [s[:-1] + [m] for s, m in zip(data.seqs, moved, strict=True)]
    assert seqs != data.seqs
    return SequenceData(data.name, data.users, seqs, data.vocab)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("protocol") / "tiny.toml"
    path.write_text(TOML)
    return path


@pytest.fixture(scope="module")
def reports(config: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    data = generate(SPEC)
    attrs = build(item_attributes(SPEC))
    kw: dict[str, Any] = {"config": config, "flags": {}, "seeds": [0, 1], "attributes": attrs,
                          "tower": False}
    return run_protocol(data, **kw), run_protocol(other_test_targets(data), **kw)


def test_changing_the_test_targets_changes_nothing_chosen_only_test_figures(
        reports: tuple[dict[str, Any], dict[str, Any]]) -> None:
    a, b = reports
    assert [r["seed"] for r in a["runs"]] == [0, 1]
    for ra, rb in zip(a["runs"], b["runs"], strict=True):
        # every choice (epoch, epochs run, the blend's weight) and every validation figure
        assert ra["chosen"] == rb["chosen"]
        assert ra["valid"] == rb["valid"]
        assert "blend_beta_relative" in ra["chosen"]
        assert set(ra["test"]) == {"no_refit", "no_refit_blend", "refit"}
        for row in ra["test"]:  # the test rows, scored on other targets, differ
            assert ra["test"][row]["full"] != rb["test"][row]["full"], row
    assert a["summary"] != b["summary"]


def test_the_choices_never_see_the_test_targets(tiny_data: SequenceData) -> None:
    from training.data.sequences import leave_one_out

    split = leave_one_out(tiny_data)
    hidden = sealed(split)
    assert not hidden.test_target.any()  # all PAD
    assert np.array_equal(hidden.valid_target, split.valid_target)
    assert hidden.train == split.train
    assert hidden.inputs("test") == split.inputs("test")


def test_both_rows_per_seed_and_their_mean_and_spread(reports: tuple[dict[str, Any], dict[str, Any]]) -> None:
    report = reports[0]
    assert report["seeds"] == [0, 1] and report["wall_clock_seconds"] > 0 and report["complete"]
    for run in report["runs"]:
        assert 1 <= run["chosen"]["best_epoch"] <= run["chosen"]["epochs_run"] <= 6
        assert run["seconds"]["selection"] > 0 and run["seconds"]["refit"] > 0
        assert set(run["test"]["refit"]) == {"full", "sampled"}
    for row in ("no_refit", "refit"):
        values = [r["test"][row]["full"]["ndcg@10"] for r in report["runs"]]
        cell = report["summary"][row]["full"]["ndcg@10"]
        assert cell["mean"] == pytest.approx(statistics.fmean(values))
        assert cell["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    one = summarise(report["runs"][:1])
    assert one["refit"]["full"]["hr@10"]["std"] == 0.0


def test_the_budget_is_epochs_not_the_files_wall_clock(tmp_path: Path) -> None:
    hurried = tmp_path / "hurried.toml"
    hurried.write_text(TOML.replace("epochs = 6\npatience = 2", "epochs = 3\npatience = 3\nmax_minutes = 0.00001"))
    report = run_protocol(generate(SPEC), config=hurried, flags={}, seeds=[0], refit=False)
    assert report["runs"][0]["chosen"]["epochs_run"] == 3  # the file's time budget would stop at 1
    assert report["train_config"]["max_minutes"] is None
    cut = run_protocol(generate(SPEC), config=hurried, flags={"max_minutes": 0.00001}, seeds=[0],
                       refit=False)
    assert cut["runs"][0]["chosen"]["epochs_run"] == 1


def test_bad_arguments_are_refused(config: Path) -> None:
    data = generate(SPEC)
    with pytest.raises(ConfigError, match="seeds must differ"):
        run_protocol(data, config=config, flags={}, seeds=[1, 1])
    with pytest.raises(ConfigError, match="--no-tower needs --attributes"):
        run_protocol(data, config=config, flags={}, seeds=[0], tower=False)
    with pytest.raises(ConfigError, match="samples must be one of"):
        run_protocol(data, config=config, flags={"samples": "all"}, seeds=[0])


runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "results/p.txt"], "--out must name a .json file"),
    (["--no-tower"], "--no-tower needs --attributes"),
    (["--config", "nope.toml"], "config file nope.toml does not exist"),
    (["--config", str(Path(__file__).parents[3] / "training/configs/beauty.toml"), "--samples", "prefixes",
      "--data", "missing.txt"], "missing.txt: no such file"),
    (["--seeds", "0"], "--seeds"),
])
def test_the_command_refuses_bad_arguments_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    data = tmp_path / "clicks.txt"
    data.write_text("u1 1 2 3\n")
    result = runner.invoke(app, ["protocol", "--data", str(data), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_command_refuses_a_baseline(tmp_path: Path) -> None:
    (tmp_path / "bpr.toml").write_text('model = "bpr"\n')
    data = tmp_path / "clicks.txt"
    data.write_text("u1 1 2 3\n")
    result = runner.invoke(app, ["protocol", "--data", str(data), "--config", str(tmp_path / "bpr.toml")])
    assert result.exit_code == 2
    assert "the protocol trains a sequence model" in result.output


def test_the_command_writes_the_results_file_and_the_table(tmp_path: Path, config: Path) -> None:
    data = generate(SPEC)
    path = tmp_path / "clicks.txt"
    write_sequences(path, data.users, [data.vocab.decode(s) for s in data.seqs])
    out = tmp_path / "p.json"
    threads = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["protocol", "--data", str(path), "--config", str(config),
                                     "--seeds", "1", "--first-seed", "4", "--epochs", "2", "--no-refit",
                                     "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the command sets this process's threads
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["seeds"] == [4] and set(report["summary"]) == {"no_refit"}
    assert report["train_config"]["epochs"] == 2 and "machine" in report
    assert report["train_config"]["threads"] == 1 and report["torch_threads"] == 1
    assert "no_refit" in result.output and "seed 4" in result.output


def test_the_results_so_far_are_written_after_each_seed(config: Path) -> None:
    partial: list[dict[str, Any]] = []
    final = run_protocol(generate(SPEC), config=config, flags={"epochs": 1}, seeds=[0, 1],
                         refit=False, on_seed=partial.append)
    assert len(partial) == 1 and not partial[0]["complete"] and partial[0]["seeds"] == [0]
    assert partial[0]["runs"] == final["runs"][:1] and final["complete"]


def _flat(x: Any, path: str = "") -> dict[str, float]:
    """Nested dicts and lists of numbers as one {path: number} dict."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _flat(val, f"{path}/{key}").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _flat(val, f"{path}/{i}").items()}
    return {path: float(x)}


def test_seeds_run_apart_merge_into_the_run_over_all_of_them(tmp_path: Path, config: Path) -> None:
    """Two processes of one seed each, merged, give the runs and summary of one process
    over both seeds; files that are not the same run are refused with the reason."""
    data = generate(SPEC)
    path = tmp_path / "clicks.txt"
    write_sequences(path, data.users, [data.vocab.decode(s) for s in data.seqs])
    base = ["protocol", "--data", str(path), "--config", str(config), "--epochs", "2", "--no-refit"]
    files = []
    for seed in (1, 0):
        files.append(tmp_path / f"s{seed}.json")
        result = runner.invoke(app, [*base, "--seeds", "1", "--first-seed", str(seed), "--out", str(files[-1])])
        assert result.exit_code == 0, result.output
    both = run_protocol(data, config=config, flags={"epochs": 2}, seeds=[0, 1], refit=False)
    out = tmp_path / "merged.json"
    result = runner.invoke(app, ["protocol-merge", *map(str, files), "--out", str(out)])
    assert result.exit_code == 0, result.output
    merged = json.loads(out.read_text())
    assert merged["seeds"] == [0, 1] and merged["complete"]
    assert _flat([r["test"] for r in merged["runs"]]) == pytest.approx(_flat([r["test"] for r in both["runs"]]))
    assert _flat(merged["summary"]) == pytest.approx(_flat(summarise(both["runs"])))
    assert "seeds [0, 1]" in result.output

    other = tmp_path / "other.json"
    assert runner.invoke(app, [*base, "--seeds", "1", "--first-seed", "2", "--lr", "0.01",
                               "--out", str(other)]).exit_code == 0
    for args, message in (([files[0], other], "differs from"),
                          ([files[0], files[0]], "seed 1 is in both"),
                          ([files[0]], "at least two"),
                          ([files[0], tmp_path / "none.json"], "cannot read")):
        result = runner.invoke(app, ["protocol-merge", *map(str, args), "--out", str(tmp_path / "x.json")])
        assert result.exit_code == 2 and message in result.output, result.output
    partial = json.loads(files[0].read_text()) | {"complete": False}
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    result = runner.invoke(app, ["protocol-merge", str(tmp_path / "partial.json"), str(files[1])])
    assert result.exit_code == 2 and "incomplete" in result.output
    # the same configuration given by another path merges
    moved = json.loads(files[1].read_text()) | {"config": "/elsewhere/tiny.toml"}
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert runner.invoke(app, ["protocol-merge", str(files[0]), str(tmp_path / "moved.json"),
                               "--out", str(tmp_path / "x.json")]).exit_code == 0
    # a file written before a setting existed (at its default) merges; another value does not
    older = json.loads(files[1].read_text())
    del older["train_config"]["ema"], older["model_config"]["norm"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert runner.invoke(app, ["protocol-merge", str(files[0]), str(tmp_path / "older.json"),
                               "--out", str(tmp_path / "x.json")]).exit_code == 0
    older["train_config"]["ema"] = 0.5
    (tmp_path / "older.json").write_text(json.dumps(older))
    result = runner.invoke(app, ["protocol-merge", str(files[0]), str(tmp_path / "older.json"),
                                 "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "differs from" in result.output and "'ema': 0.5" in result.output
    # a run with a refit row (no flag records --refit) against runs without one
    refitted = json.loads(files[1].read_text())
    refitted["runs"][0]["test"]["refit"] = refitted["runs"][0]["test"]["no_refit"]
    (tmp_path / "refitted.json").write_text(json.dumps(refitted))
    (tmp_path / "number.json").write_text("3")
    for args, message in (([files[0], tmp_path / "refitted.json"], "other --refit or --blend"),
                          ([files[0], tmp_path / "number.json"], "is not a protocol results file")):
        result = runner.invoke(app, ["protocol-merge", *map(str, args), "--out", str(tmp_path / "x.json")])
        assert result.exit_code == 2 and message in result.output, result.output


def test_each_rows_bundle_scores_what_the_protocol_reported(tmp_path: Path, config: Path) -> None:
    """With --bundles, each seed's models are exported, and `streamrec evaluate` on each
    bundle (ONNX encoder, the index's vectors) gives the figures the protocol reported."""
    data = generate(SPEC)
    path = tmp_path / "clicks.txt"
    write_sequences(path, data.users, [data.vocab.decode(s) for s in data.seqs])
    out, bundles = tmp_path / "p.json", tmp_path / "bundles"
    result = runner.invoke(app, ["protocol", "--data", str(path), "--config", str(config),
                                 "--seeds", "1", "--epochs", "2", "--bundles", str(bundles),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())["runs"][0]
    assert set(run["bundles"]) == {"no_refit", "refit"}
    assert "seed-0-no_refit" in result.output
    for row in ("no_refit", "refit"):
        evaluated = runner.invoke(app, ["evaluate", str(bundles / f"seed-0-{row}"), "--data", str(path),
                                        "--json"])
        assert evaluated.exit_code == 0, evaluated.output
        served = json.loads(evaluated.output)
        for proto in ("full", "sampled"):
            assert served[proto] == pytest.approx(run["test"][row][proto], abs=1e-6), (row, proto)
        assert run["bundles"][row]["max_abs_diff"] < 1e-6
    assert run["test"]["no_refit"] != run["test"]["refit"]  # two models, two bundles


def test_a_model_with_an_item_tower_is_exported_with_its_attributes(tmp_path: Path, config: Path) -> None:
    data = generate(SPEC)
    report = run_protocol(data, config=config, flags={"epochs": 1}, seeds=[0], refit=False, blend=False,
                          attributes=build(item_attributes(SPEC)), bundles=tmp_path)
    exported = report["runs"][0]["bundles"]["no_refit"]
    assert (tmp_path / "seed-0-no_refit" / "item_tower.onnx").is_file()
    assert exported["max_abs_diff"] < 1e-6
