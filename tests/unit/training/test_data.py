"""Unit tests of :mod:`training.data.sequences`."""

from __future__ import annotations

from pathlib import Path

from training.data.sequences import leave_one_out, load_dataset, load_movielens, without_last_items


def test_sequence_loader_and_split(tmp_path: Path) -> None:
    p = tmp_path / "d.txt"
    p.write_text("1 10 11 12 13\n2 11 12\n3 12 10 13\n")
    d = load_dataset(p)
    assert d.users == ["1", "2", "3"] and d.vocab.ids == ("10", "11", "12", "13")
    s = leave_one_out(d)
    assert s.eval_users.tolist() == [0, 2]
    assert d.vocab.decode(s.train[0]) == ["10", "11"] and s.train[1] == d.vocab.encode(["11", "12"])
    assert d.vocab.decode(list(s.valid_target)) == ["12", "10"]
    assert d.vocab.decode(list(s.test_target)) == ["13", "13"]
    assert [d.vocab.decode(x) for x in s.inputs("test")] == [["10", "11", "12"], ["12", "10"]]
    # --tune: without the last items, the split's test targets are the validation items
    tuned = leave_one_out(without_last_items(d))
    assert d.vocab.decode(list(tuned.test_target)) == ["12"]  # user 3 is too short now
    assert tuned.inputs("test")[0] == s.inputs("valid")[0]


def test_movielens_sorted_by_time(tmp_path: Path) -> None:
    p = tmp_path / "ratings.dat"
    p.write_text("1::20::5::300\n1::10::3::100\n2::10::4::5\n1::30::1::200\n")
    d = load_movielens(p)
    assert d.vocab.decode(d.seqs[0]) == ["10", "30", "20"]
    assert load_dataset(p).fingerprint() == d.fingerprint()

