import base64

import orjson

from streams.batch import BatchRules, Record, apply_batch

RULES = BatchRules(max_len=10, dedup_window=10, max_event_bytes=2048)


def rec(user: str, eid: str, item: str, offset: int, ts: int = 1) -> Record:
    value = orjson.dumps({"event_id": eid, "user_id": user, "item_id": item, "ts": ts})
    return Record(user.encode(), value, "clicks", 3, offset)


def test_batch_applies_in_order_and_reports_last_event_per_user() -> None:
    table: dict[bytes, dict] = {}
    out = apply_batch(table, [rec("u1", "a", "i1", 0, 5), rec("u2", "b", "i2", 1),
                              rec("u1", "c", "i3", 2, 7)], RULES)
    assert table[b"u1"]["items"] == ["i1", "i3"]
    assert out.touched["u1"].last_event_id == "c" and out.touched["u1"].seq == 2
    assert out.touched["u1"].last_event_ts == 7
    assert out.histories["u2"] == ["i2"]
    assert len(out.applied_ts) == 3 and not out.dead and out.duplicates == 0


def test_bad_records_are_dead_lettered_with_origin_and_good_ones_still_apply() -> None:
    table: dict[bytes, dict] = {}
    bad = Record(b"u9", b"{nope", "clicks", 4, 17)
    out = apply_batch(table, [rec("u1", "a", "i1", 0), bad, rec("u1", "b", "i2", 2)], RULES)
    assert table[b"u1"]["items"] == ["i1", "i2"]
    assert len(out.dead) == 1
    letter = orjson.loads(out.dead[0].encode("w1"))
    assert letter["topic"] == "clicks" and letter["partition"] == 4 and letter["offset"] == 17
    assert letter["reason"].startswith("malformed JSON") and letter["key"] == "u9"
    assert base64.b64decode(letter["value_b64"]) == b"{nope"  # the original bytes survive


def test_duplicate_in_batch_and_across_batches() -> None:
    table: dict[bytes, dict] = {}
    apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1, ts=9)], RULES)
    before = dict(table[b"u1"])
    out = apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "a", "i1", 1)], RULES)
    assert out.duplicates == 2 and not out.touched and not out.applied_ts
    assert table[b"u1"] == before


def test_redelivered_latest_event_recomputes_the_list_without_changing_state() -> None:
    # The worker that applied "b" may have died before writing the list: redelivery
    # must produce the list again, with the provenance of the stored state.
    table: dict[bytes, dict] = {}
    apply_batch(table, [rec("u1", "a", "i1", 0), rec("u1", "b", "i2", 1, ts=9)], RULES)
    before = dict(table[b"u1"])
    out = apply_batch(table, [rec("u1", "b", "i2", 1, ts=9), rec("u1", "b", "i2", 2, ts=9)], RULES)
    assert out.duplicates == 2 and not out.applied_ts and table[b"u1"] == before
    p = out.touched["u1"]
    assert (p.seq, p.last_event_id, p.last_event_ts) == (2, "b", 9)
    assert out.histories["u1"] == ["i1", "i2"]


def test_retry_transient_retries_connection_errors_only() -> None:
    import asyncio

    import pytest
    from redis.exceptions import ConnectionError as RedisConnectionError

    from streams.worker import retry_transient

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
