"""Unit tests of :mod:`serving.reader`: the stored layout, read tolerantly."""

from __future__ import annotations

from serving.keys import SCHEMA_VERSION
from serving.reader import parse

STORED = {b"items": b'["a","b"]', b"scores": b"[1.5,null]", b"source": b"model",
          b"model_version": b"v1", b"generated_at": b"1000", b"last_event_id": b"e9",
          b"last_event_ts": b"990", b"seq": b"9", b"epoch": b"3", b"schema": b"1"}


def test_a_stored_list_reads_back_with_its_provenance() -> None:
    r = parse("u1", STORED)
    assert (r.items, r.scores, r.source, r.model_version) == (["a", "b"], [1.5, None], "model", "v1")
    assert (r.seq, r.epoch, r.last_event_id, r.schema) == (9, 3, "e9", SCHEMA_VERSION)


def test_fields_a_newer_writer_adds_are_ignored() -> None:
    r = parse("u1", {**STORED, b"ab_arm": b"b"})
    assert r.items == ["a", "b"] and not hasattr(r, "ab_arm")


def test_reasons_are_read_when_present() -> None:
    assert parse("u1", {**STORED, b"reasons": b'["sequence","fresh"]'}).reasons == ["sequence", "fresh"]
    assert parse("u1", STORED).reasons is None  # a list written before reasons


def test_lists_written_before_versions_and_epochs_still_read() -> None:
    old = {k: v for k, v in STORED.items() if k not in (b"schema", b"epoch")}
    r = parse("u1", old)
    assert (r.schema, r.epoch) == (0, 0)


def test_str_and_bytes_clients_read_alike() -> None:
    as_text = {k.decode(): v.decode() for k, v in STORED.items()}
    assert parse("u1", as_text) == parse("u1", STORED)


def test_the_list_id_is_read_when_present() -> None:
    assert parse("u1", {**STORED, b"list_id": b"run:7.3"}).list_id == "run:7.3"
    assert parse("u1", {**STORED, b"list_id": b""}).list_id is None  # a list not named
    assert parse("u1", STORED).list_id is None  # a list written before list ids
