"""Unit tests of :mod:`serving.step_encoder` on a real exported bundle (positions from the
start, with its prefill and step graphs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from serving.bundle import load_bundle
from serving.funnel import Batch, Funnel, FunnelConfig
from serving.index import SeenItems, seen_array
from serving.manifest import MANIFEST, STEP_ATOL
from serving.step_encoder import StepEncoder
from streamrec.errors import BundleRejected
from streamrec.files import sha256_file
from streamrec.sequences import left_pad


def _stream(bundle_dir: Path, budget_mb: float = 64.0, min_len: int = 1) -> tuple[StepEncoder, object]:
    """The bundle's step encoder, caching windows from ``min_len`` items (the worker's: 8)."""
    b = load_bundle(bundle_dir, cache_mb=budget_mb)
    assert b.step is not None and b.window.anchored
    b.step.min_len = min_len
    return b.step, b


def _full(b, windows):  # type: ignore[no-untyped-def]
    return b.encoder.encode(left_pad(windows, max(map(len, windows))))


def test_steps_give_the_full_encoders_vectors_across_window_moves(tiny_bundle_dir: Path) -> None:
    step, b = _stream(tiny_bundle_dir)
    rng = np.random.default_rng(1)
    n_items, window = b.manifest.num_items, b.window  # type: ignore[attr-defined]
    seqs: dict[str, list[int]] = {f"u{i}": [] for i in range(6)}
    worst = 0.0
    for _ in range(3 * window.max_len):  # the window's start moves several times
        users = [u for u in seqs if rng.random() < 0.8]
        for u in users:  # mostly one new item, sometimes several (several steps)
            for _ in range(int(rng.choice([1, 1, 1, 1, 2, 3]))):
                seqs[u].append(int(rng.integers(1, n_items + 1)))
        ws = [list(window.cut(seqs[u])) for u in users]
        if users:
            worst = max(worst, float(np.abs(step.encode(users, ws) - _full(b, ws)).max()))
    assert worst <= STEP_ATOL
    assert step.stats.steps > 4 * step.stats.prefills  # mostly steps (the start moves every 10 items)
    assert step.stats.by_reason["changed"] > 0  # the window moved: rebuilt, not stepped
    # the step's batch buffer: keys and values of at most 6 users at the longest window,
    # allocated once for that length rather than grown as windows grow
    layers, heads, _, dh = next(e.state for e in step._cache.values() if e.state).keys.shape
    assert 0 < step._scratch.nbytes <= 2 * 2 * layers * 6 * heads * window.max_len * dh


def test_a_state_that_no_longer_encodes_the_window_is_rebuilt(tiny_bundle_dir: Path) -> None:
    step, b = _stream(tiny_bundle_dir)
    step.encode(["u"], [[1, 2, 3]])
    before = step.stats.prefills
    # more new items than MAX_STEPS (another worker served the user meanwhile), an item
    # that reads differently now, a window whose start moved
    for ws in ([[1, 2, 3, 4, 5, 6, 7, 8]], [[1, 9, 3, 4]], [[2, 3]]):
        got = step.encode(["u"], ws)
        np.testing.assert_allclose(got, _full(b, ws), atol=1e-4)
    assert step.stats.prefills == before + 3 and step.stats.by_reason["changed"] == 3
    # unchanged: the stored vector; one more item: one step; three more: three steps
    np.testing.assert_allclose(step.encode(["u"], [[2, 3]]), _full(b, [[2, 3]]), atol=1e-4)
    assert step.stats.unchanged == 1
    step.encode(["u"], [[2, 3, 7]])
    assert step.stats.steps == 1
    ws = [[2, 3, 7, 1, 5, 9]]
    np.testing.assert_allclose(step.encode(["u"], ws), _full(b, ws), atol=1e-3)
    assert step.stats.steps == 2 and step.stats.prefills == before + 3


def test_the_same_user_twice_in_one_call(tiny_bundle_dir: Path) -> None:
    step, b = _stream(tiny_bundle_dir)
    ws = [[1, 2], [1, 2, 3]]
    np.testing.assert_allclose(step.encode(["u", "u"], ws), _full(b, ws), atol=1e-4)
    assert len(step) == 1


def test_the_cache_stays_within_its_budget(tiny_bundle_dir: Path) -> None:
    step, _ = _stream(tiny_bundle_dir, budget_mb=0.01)  # ~10 kB: a few users
    for i in range(50):
        step.encode([f"u{i}"], [[1, 2, 3, 4, 5, 6]])
    assert 0 < len(step) < 50 and step.stats.evictions == 50 - len(step)
    assert step.bytes <= step.budget_bytes
    assert step.bytes == sum(s.nbytes for s in step._cache.values())


def test_cached_lists_equal_uncached_ones_for_cut_sessions(tiny_bundle_dir: Path) -> None:
    """The worker's sessions keep their last items only; ``counts`` places the window."""
    b = load_bundle(tiny_bundle_dir)
    funnel = Funnel(FunnelConfig(top_n=10))
    ids = b.vocab.ids
    rng = np.random.default_rng(2)
    hist: dict[str, list[str]] = {f"u{i}": [] for i in range(8)}
    keep = 2 * b.max_len
    same = total = 0
    for _ in range(3 * b.max_len):
        users = list(hist)
        for u in users:
            hist[u].append(ids[int(rng.integers(len(ids)))])
        cut, counts = [hist[u][-keep:] for u in users], [len(hist[u]) for u in users]
        cached = funnel.run(b, Batch(cut, users=users, counts=counts))
        plain = funnel.run(b, Batch(cut, counts=counts))
        same += sum(x.items == y.items for x, y in zip(cached, plain, strict=True))
        total += len(users)
    assert b.step is not None and b.step.stats.steps > 0
    assert same >= 0.98 * total  # float16 state: a near-tie may swap


def test_a_step_model_from_another_model_is_refused(tiny_bundle_dir: Path, tiny_bundle_b: Path,
                                                    tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle_dir, bad)
    shutil.copy(tiny_bundle_b / "step.onnx", bad / "step.onnx")
    manifest = orjson.loads((bad / MANIFEST).read_bytes())
    manifest["files"]["step.onnx"] = sha256_file(bad / "step.onnx")
    (bad / MANIFEST).write_bytes(orjson.dumps(manifest))
    with pytest.raises(BundleRejected, match="cached steps differ"):
        load_bundle(bad)


def test_a_step_model_without_positions_from_the_start_is_refused(tiny_bundle_dir: Path,
                                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle_dir, bad)
    manifest = orjson.loads((bad / MANIFEST).read_bytes())
    manifest["model_config"]["positions"] = "end"
    (bad / MANIFEST).write_bytes(orjson.dumps(manifest))
    with pytest.raises(BundleRejected, match="positions counted from the start"):
        load_bundle(bad)


def test_cache_budget_zero_turns_the_step_encoder_off(tiny_bundle_dir: Path) -> None:
    assert load_bundle(tiny_bundle_dir, cache_mb=0).step is None


def test_sessions_encoded_by_their_new_items_equal_sessions_encoded_whole(tiny_bundle_dir: Path) -> None:
    """Cut sessions (oldest items dropped), repeated and unknown items, sessions another
    worker extended meanwhile, counts that go back, and new proxies: every answer is what
    encoding the whole stored session gives."""
    step, b = _stream(tiny_bundle_dir)
    vocab = b.vocab  # type: ignore[attr-defined]
    ids = [*vocab.ids[:15], "unknown-1", "unknown-2"]  # a small pool: items repeat
    rng = np.random.default_rng(4)
    keep = 12
    full: dict[str, list[str]] = {f"u{i}": [] for i in range(5)}
    proxies: dict[str, int] = {}
    for t in range(400):
        u = f"u{int(rng.integers(5))}"
        for _ in range(int(rng.choice([1, 1, 1, 2, 5]))):  # sometimes several events at once
            full[u].append(ids[int(rng.integers(len(ids)))])
        if t % 97 == 96:  # the live catalogue changed: an unknown item now reads as a proxy
            proxies = {"unknown-1": 3} if not proxies else {}
        count = len(full[u])
        if t % 61 == 60:  # the session was rebuilt with fewer events (a log begun again)
            full[u] = full[u][-3:]
            count = 3
        history = full[u][-keep:]

        def read(h, p=proxies):  # type: ignore[no-untyped-def]
            return [x for i in h if (x := vocab.index(i) or p.get(i))]

        [(encoded, seen)] = step.sessions([u], [history], [count], proxies, read)
        assert encoded == read(history), t
        assert set(seen) == set(read(history)), t
        # the array the index masks with, kept up to date by the same new items
        assert sorted(seen_array(seen).tolist()) == sorted(set(read(history))), t
    assert step.stats.extended > 5 * step.stats.sessions_encoded > 0
    assert step.bytes == sum(e.nbytes for e in step._cache.values())


def test_the_same_user_twice_in_one_sessions_call_keeps_each_rows_seen_items(tiny_bundle_dir: Path) -> None:
    """Two events of one user in a batch: the first row's seen items are its own
    session's, not the second's (the cached session is extended in place)."""
    step, b = _stream(tiny_bundle_dir)
    ids = list(b.vocab.ids[:12])  # type: ignore[attr-defined]

    def read(h):  # type: ignore[no-untyped-def]
        return [b.vocab.index(i) for i in h]  # type: ignore[attr-defined]

    step.sessions(["u"], [ids[:5]], [5], {}, read)
    first, second = ids[1:6], ids[2:7]  # events 6 and 7, each session cut to 5 items
    (e1, s1), (e2, s2) = step.sessions(["u", "u"], [first, second], [6, 7], {}, read)
    assert e1 == read(first) and e2 == read(second)
    assert set(s1) == set(read(first)) and set(s2) == set(read(second))
    assert sorted(seen_array(s1).tolist()) == sorted(read(first))
    assert sorted(seen_array(s2).tolist()) == sorted(read(second))
    assert step.stats.extended == 2


def test_short_windows_and_sessions_are_encoded_whole_and_not_cached(tiny_bundle_dir: Path) -> None:
    step, b = _stream(tiny_bundle_dir, min_len=4)
    ws = [[1, 2, 3], [1, 2, 3, 4], [5]]
    np.testing.assert_allclose(step.encode(["a", "b", "c"], ws), _full(b, ws), atol=1e-4)
    assert step.stats.short == 2 and step.stats.prefills == 1 and len(step) == 1
    got = step.sessions(["a", "b"], [["x"], ["y", "z", "y", "w"]], [1, 4], {}, lambda h: [1] * len(h))
    assert got[0][0] == [1] and step.stats.sessions_encoded == 1  # only b's session is kept
    assert step.take_counts()["short"] == 2


def test_a_step_model_giving_non_finite_vectors_is_refused_at_export_and_load(
        tiny_bundle_dir: Path, tmp_path: Path) -> None:
    import torch

    from streamrec.errors import ExportError
    from training.export.bundle import export_step_models
    from training.models.retrieval import SASRec, SASRecConfig

    manifest = orjson.loads((tiny_bundle_dir / MANIFEST).read_bytes())
    model = SASRec(SASRecConfig(**{k: v for k, v in manifest["model_config"].items() if k != "train"}))
    with torch.no_grad():
        model.ln_f.weight[0] = float("nan")
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    shutil.copy(tiny_bundle_dir / "encoder.onnx", graphs / "encoder.onnx")
    with pytest.raises(ExportError, match="disagree"):
        export_step_models(model.eval(), graphs, [[1, 2, 3], [4, 5]])
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle_dir, bad)
    shutil.copy(graphs / "step.onnx", bad / "step.onnx")  # the NaN model's steps
    manifest["files"]["step.onnx"] = sha256_file(bad / "step.onnx")
    (bad / MANIFEST).write_bytes(orjson.dumps(manifest))
    with pytest.raises(BundleRejected, match="differ from the encoder by inf"):
        load_bundle(bad)



def _two_block_model(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A random two-block SASRec (positions from the start), its encoder exported to
    ``tmp_path``, and windows to replay."""
    import torch

    from training.export.bundle import export_onnx
    from training.models.retrieval import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=40, max_len=12, dim=16, layers=2, heads=2, lowpass=0.5)).eval()
    export_onnx(model, tmp_path / "encoder.onnx")
    windows = [[int(i) for i in np.random.default_rng(s).integers(1, 41, 11)] for s in range(4)]
    return model, windows


def test_each_blocks_state_is_its_own_step_input(tmp_path: Path) -> None:
    """Two blocks: the step model takes keys_0, keys_1, values_0, values_1 (no stacked
    input to split inside the graph), and its cached steps match the full encoder."""
    import onnxruntime as ort

    from training.export.bundle import export_step_models

    model, windows = _two_block_model(tmp_path)
    worst = export_step_models(model, tmp_path, windows)
    names = {i.name for i in ort.InferenceSession(str(tmp_path / "step.onnx")).get_inputs()}
    assert {"keys_0", "keys_1", "values_0", "values_1"} <= names and "keys" not in names
    assert worst <= STEP_ATOL


def test_a_step_model_with_the_state_stacked_still_serves(tmp_path: Path) -> None:
    """A step model exported before the per-block inputs (``keys``/``values`` stacked
    over the blocks, [layers, B, H, T, Dh]) is fed that way and gives the full encoder's
    vectors."""
    import torch

    from serving.encoder import Encoder, make_session
    from serving.step_encoder import OUTPUTS, replay_error
    from training.export.bundle import export_step_models
    from training.models.incremental import prefill, step

    model, windows = _two_block_model(tmp_path)
    export_step_models(model, tmp_path, windows)  # the prefill graph

    class Stacked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, item, pos, keys, values, past, sums, count):  # type: ignore[no-untyped-def]
            vec, (k, v, s) = step(self.m, item, pos, keys.float(), values.float(), past, sums, count)
            return vec, k.half(), v.half(), s

    seq = torch.tensor([[0, 1, 2], [3, 4, 5]])
    with torch.no_grad():
        _, (k, v, sums) = prefill(model, seq)
    past = seq > 0
    axes = {1: "batch", 3: "past"}
    torch.onnx.export(Stacked().eval(), (torch.tensor([6, 7]), past.sum(dim=1), k.half(), v.half(), past,
                                         sums, past.sum(dim=1).float()),
                      str(tmp_path / "stacked.onnx"),
                      input_names=["item", "pos", "keys", "values", "past", "sums", "count"],
                      output_names=list(OUTPUTS),
                      dynamic_axes={"item": {0: "batch"}, "pos": {0: "batch"}, "keys": axes, "values": axes,
                                    "past": {0: "batch", 1: "past"}, "sums": {1: "batch"},
                                    "count": {0: "batch"}},
                      opset_version=17, dynamo=False)
    enc = StepEncoder(make_session(tmp_path / "prefill.onnx"), make_session(tmp_path / "stacked.onnx"),
                      12, 1 << 30, Encoder(make_session(tmp_path / "encoder.onnx")), min_len=1)
    assert enc._stacked

    def full(seqs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(seqs)).numpy()  # type: ignore[no-any-return]

    assert replay_error(enc, windows, full) <= STEP_ATOL
    assert enc.stats.steps > 0


def test_seen_items_behave_as_a_set_and_their_array_follows_the_map() -> None:
    counts = {3: 1, 5: 2}
    seen = SeenItems(counts)
    assert 3 in seen and 4 not in seen and len(seen) == 2 and set(seen) == {3, 5}
    assert seen | {7} == {3, 5, 7} and type(seen | {7}) is set
    assert sorted(seen_array(seen).tolist()) == [3, 5]
    counts[9] = 1
    seen.added([9])
    assert sorted(seen.array().tolist()) == [3, 5, 9]
    del counts[3]
    seen.removed()
    assert sorted(seen.array().tolist()) == [5, 9]
    assert seen_array({2, 4}).dtype == np.int64
