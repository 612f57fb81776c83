"""Unit tests of :mod:`streams.batch`."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from streamrec.session import Session, SessionRules
from streams.batch import DeadLetter, Record, apply_batch

RULES = SessionRules(max_len=10, dedup_window=10, max_event_bytes=2048)


class Sessions(dict[bytes, Session]):
    """The table as a dict that remembers which changelog partition each key went to."""

    def __init__(self, persistent: bool = False) -> None:
        super().__init__()
        self.persistent = persistent
        self.partition: dict[bytes, int] = {}
        self.puts = 0

    def put(self, key: bytes, value: Session, partition: int) -> None:
        self[key] = value
        self.partition[key] = partition
        self.puts += 1


def rec(user: str, eid: str, item: str, offset: int, ts: int = 1, partition: int = 3) -> Record:
    value = orjson.dumps({"event_id": eid, "user_id": user, "item_id": item, "ts": ts})
    return Record(user.encode(), value, "clicks", partition, offset)


def test_batch_applies_in_order_and_reports_last_event_per_user() -> None:
    table = Sessions()
    out = apply_batch(table, [rec("u1", "a", "i1", 0, 5), rec("u2", "b", "i2", 1),
                              rec("u1", "c", "i3", 2, 7)], RULES)
    assert table[b"u1"]["items"] == ["i1", "i3"]
    assert out.touched["u1"].last_event_id == "c" and out.touched["u1"].seq == 2
    assert out.touched["u1"].last_event_ts == 7
    assert out.histories["u2"] == ["i2"]
    assert len(out.applied_ts) == 3 and not out.dead and out.duplicates == 0


def test_bad_records_are_dead_lettered_with_origin_and_good_ones_still_apply() -> None:
    table = Sessions()
    bad = Record(b"u9", b"{nope", "clicks", 4, 17)
    out = apply_batch(table, [rec("u1", "a", "i1", 0), bad, rec("u1", "b", "i2", 2)], RULES)
    assert table[b"u1"]["items"] == ["i1", "i2"]
    assert len(out.dead) == 1
    letter = orjson.loads(out.dead[0].encode("w1"))
    assert letter["topic"] == "clicks" and letter["partition"] == 4 and letter["offset"] == 17
    assert letter["reason"].startswith("malformed JSON") and letter["key"] == "u9"
    assert base64.b64decode(letter["value_b64"]) == b"{nope"  # the original bytes survive


def test_duplicate_in_batch_and_across_batches() -> None:
    table = Sessions()
    apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1, ts=9)], RULES)
    before = dict(table[b"u1"])
    out = apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "a", "i1", 1)], RULES)
    assert out.duplicates == 2 and not out.touched and not out.applied_ts
    assert table[b"u1"] == before


def test_redelivered_latest_event_recomputes_the_list_without_changing_state() -> None:
    # The worker that applied "b" may have died before writing the list: redelivery
    # must produce the list again, with the provenance of the stored state.
    table = Sessions()
    apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1, ts=9)], RULES)
    before = dict(table[b"u1"])
    out = apply_batch(table, [rec("u1", "b", "i2", 1, ts=9), rec("u1", "b", "i2", 2, ts=9)], RULES)
    assert out.duplicates == 2 and not out.applied_ts and table[b"u1"] == before
    p = out.touched["u1"]
    assert (p.seq, p.last_event_id, p.last_event_ts) == (2, "b", 9)
    assert out.histories["u1"] == ["i1", "i2"]


def test_a_redelivery_sends_a_disk_stored_session_to_the_changelog_again() -> None:
    # A disk store can hold a session whose changelog send died with the worker: the
    # redelivered records are duplicates, and the session is written once more (same
    # value, same partition) before their offsets can be committed.
    table = Sessions(persistent=True)
    apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1)], RULES)
    before, puts = dict(table[b"u1"]), table.puts
    out = apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1)], RULES)
    assert out.duplicates == 2 and table.puts == puts + 1
    assert table[b"u1"] == before and table.partition[b"u1"] == 3


def test_a_redelivery_writes_nothing_to_a_memory_store() -> None:
    # in memory, a session after a start was read from the changelog: nothing to resend
    table = Sessions()
    apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1)], RULES)
    puts = table.puts
    out = apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1)], RULES)
    assert out.duplicates == 2 and table.puts == puts


def test_a_producer_duplicate_is_not_written_again() -> None:
    # the same event id at a new offset: nothing Kafka redelivered, nothing to resend
    table = Sessions(persistent=True)
    apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1)], RULES)
    puts = table.puts
    out = apply_batch(table, [rec("u1", "a", "i1", 2)], RULES)
    assert out.duplicates == 1 and table.puts == puts


def test_retry_transient_retries_connection_errors_only() -> None:
    import asyncio

    import pytest
    from redis.exceptions import ConnectionError as RedisConnectionError

    from streams.retry import retry_transient

    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RedisConnectionError("down")
        return "ok"

    assert asyncio.run(retry_transient(flaky, first_delay=0.001)) == "ok" and len(calls) == 3

    async def broken() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError):
        asyncio.run(retry_transient(broken, first_delay=0.001))


def test_state_goes_to_the_partition_the_event_came_from() -> None:
    # Whatever the producer's partitioner put a key on (murmur2, CRC32, explicit), the
    # session follows the source partition, so the worker that recovers that partition
    # recovers the session. One changelog write per user per batch.
    table = Sessions()
    apply_batch(table, [rec("u1", "a", "i1", 0, partition=5), rec("u2", "b", "i2", 1, partition=0),
                        rec("u1", "c", "i3", 2, partition=5)], RULES)
    assert table.partition == {b"u1": 5, b"u2": 0} and table.puts == 2


def test_batch_carries_its_fencing_epoch() -> None:
    out = apply_batch(Sessions(), [rec("u1", "a", "i1", 0)], RULES, epoch=42)
    assert out.epoch == 42


def test_out_of_order_timestamp_still_advances_the_session() -> None:
    table = Sessions()
    apply_batch(table, [rec("u1", "a", "i1", 0, ts=9000)], RULES)
    out = apply_batch(table, [rec("u1", "b", "i2", 1, ts=10)], RULES)  # older event time
    p = out.touched["u1"]
    assert (p.seq, p.last_event_id, p.last_event_ts) == (2, "b", 10)
    assert table[b"u1"]["items"] == ["i1", "i2"]


def test_invalid_utf8_inside_json_is_dead_lettered_not_raised() -> None:
    poison = Record(b"u1", b'{"event_id":"\xff\xfe","user_id":"u1","item_id":"i","ts":1}', "clicks", 0, 7)
    out = apply_batch(Sessions(), [poison, rec("u1", "a", "i1", 8)], RULES)
    assert len(out.dead) == 1 and "invalid UTF-8" in out.dead[0].reason
    assert out.touched["u1"].last_event_id == "a"


def test_oversized_dead_letter_is_truncated_with_hash_and_size() -> None:
    big = b"x" * 3_000_000
    letter_bytes = DeadLetter(Record(b"k" * 5000, big, "clicks", 1, 99), "too big").encode(
        "w", max_bytes=100_000)
    assert len(letter_bytes) <= 100_000
    letter = orjson.loads(letter_bytes)
    assert letter["truncated"] is True and letter["value_bytes"] == len(big)
    assert letter["value_sha256"] == hashlib.sha256(big).hexdigest()
    kept = base64.b64decode(letter["value_b64"])
    assert big.startswith(kept) and len(kept) > 50_000
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("clicks", 1, 99)


def test_dead_letter_keeps_the_records_time_and_headers_in_every_client_shape() -> None:
    def letter(**kw: object) -> dict[str, object]:
        return orjson.loads(DeadLetter(Record(b"k", b"{bad", "clicks", 1, 2, **kw), "r").encode("w"))  # type: ignore[arg-type]

    assert letter()["timestamp"] is None and letter()["headers"] == []
    assert letter(timestamp_s=1_700_000_000.123)["timestamp"] == 1_700_000_000_123
    assert letter(timestamp_s=-0.001)["timestamp"] is None  # Kafka's "no timestamp" (-1 ms)
    pairs = [("trace", b"\x00\xff"), ("none", None)]
    want = [{"key": "trace", "value_b64": base64.b64encode(b"\x00\xff").decode()}, {"key": "none", "value_b64": None}]
    assert letter(headers=pairs)["headers"] == want  # aiokafka, Faust: (str, bytes) pairs
    assert letter(headers=dict(pairs))["headers"] == want  # a mapping
    assert letter(headers=[(b"trace", b"\x00\xff"), (b"none", None)])["headers"] == want  # bytes names
    big = letter(headers=[("h", b"x" * 4000)])
    assert big["headers"] == [] and big["headers_truncated"] is True
    assert letter(headers=pairs)["headers_truncated"] is False


def test_small_dead_letter_is_whole() -> None:
    letter = orjson.loads(DeadLetter(Record(b"k", b"{bad", "clicks", 1, 2), "r").encode("w"))
    assert letter["truncated"] is False and base64.b64decode(letter["value_b64"]) == b"{bad"
    assert base64.b64decode(letter["key_b64"]) == b"k"



def test_each_applied_click_names_its_user_in_step_with_its_item() -> None:
    table = Sessions()
    out = apply_batch(table, [rec("u1", "a", "i1", 0), rec("u2", "b", "i2", 1),
                              rec("u1", "a", "i1", 2), rec("u1", "c", "i3", 3)], RULES)
    assert list(zip(out.clickers, out.clicked, strict=True)) == [("u1", "i1"), ("u2", "i2"),
                                                                ("u1", "i3")]


@pytest.mark.parametrize("max_bytes", [8192, 100_000, 262_144])
def test_a_dead_letter_of_escaped_characters_still_fits_its_limit(max_bytes: int) -> None:
    """JSON writes a control character in six bytes: a reason, key and header names of them
    are measured as written, not as characters."""
    worst = Record(b"\x01" * 5000, b"\x01" * 3_000_000, "clicks", 1, 2,
                   headers=[("\x01" * 300, b"\x01" * 300)] * 10)
    out = DeadLetter(worst, "\x01" * 5000).encode("w", max_bytes=max_bytes)
    assert len(out) <= max_bytes
    letter = orjson.loads(out)
    assert letter["truncated"] is True and letter["value_bytes"] == 3_000_000
    assert base64.b64decode(letter["value_b64"]) == b"\x01" * len(base64.b64decode(letter["value_b64"]))
    assert len(DeadLetter(Record(b"k", b"v" * 100, "clicks", 0, 1), "bad").encode("\x01" * 8000, max_bytes)) \
        <= max_bytes  # a long worker id is cut too
    one_header = Record(b"k", b"{bad", "clicks", 1, 2, headers=[("\x01" * 1000, b"")])
    assert orjson.loads(DeadLetter(one_header, "r").encode("w"))["headers_truncated"] is True


def test_a_dead_letter_is_keyed_like_its_record_unless_the_key_is_too_long() -> None:
    from streams.batch import LETTER_KEY_MAX

    assert DeadLetter(Record(b"u1", b"{bad", "clicks", 1, 2), "r").key == b"u1"
    assert DeadLetter(Record(None, b"{bad", "clicks", 1, 2), "r").key is None
    long = b"k" * (LETTER_KEY_MAX + 1)
    assert DeadLetter(Record(long, b"{bad", "clicks", 1, 2), "r").key == hashlib.sha256(long).hexdigest().encode()
    edge = b"k" * LETTER_KEY_MAX
    assert DeadLetter(Record(edge, b"{bad", "clicks", 1, 2), "r").key == edge
