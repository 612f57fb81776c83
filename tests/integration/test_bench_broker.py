"""``streamrec bench-broker`` against the real local broker (:mod:`bench.broker`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.broker import measure
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def test_each_log_length_gets_its_records_its_lookups_and_its_last_record(
    make_settings: Callable[..., Settings],
) -> None:
    s = make_settings()
    small, large = measure(s, 50, fetch_timeout_s=10), measure(s, 500, fetch_timeout_s=10)
    assert (small.records, large.records) == (50, 500)
    for r in (small, large):
        assert r.fetched, r  # the last record came back
        assert r.list_offsets_ms > 0 and r.fetch_last_ms > 0 and r.load_s >= 0
