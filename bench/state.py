"""Session-state size: bytes per user in the changelog and in worker memory."""

from __future__ import annotations

import sys
from typing import Any

import orjson

from streamrec.session import apply_event


def deep_size(obj: Any) -> int:
    """Bytes of Python objects reachable from ``obj`` (dicts, lists, strs, ints)."""
    seen: set[int] = set()
    stack, total = [obj], 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple):
            stack.extend(o)
    return total


def session_size(events: int, max_len: int, dedup_window: int) -> dict[str, int]:
    """A session after ``events`` clicks with realistic ids (Beauty-like item ids, UUID event ids)."""
    s = None
    for n in range(events):
        s = apply_event(s, f"3f2c8a9e-1b4d-4c6a-9f0e-{n:012d}", f"{1000 + n * 7 % 12101}",
                        1_764_000_000_000 + n, max_len, dedup_window)
    assert s is not None
    key = b"user-00012345"
    return {"events": events, "changelog_bytes": len(key) + len(orjson.dumps(s)),
            "memory_bytes": deep_size(s) + sys.getsizeof(key)}


def state_rows(max_len: int, dedup_window: int) -> list[str]:
    """``streamrec bench-state``: per-user bytes after 1 to 500 events, scaled to 10M users."""
    rows = []
    for events in (1, 10, 50, 500):
        r = session_size(events, max_len, dedup_window)
        rows.append(f"after {events:4d} events: changelog {r['changelog_bytes']:6d} B/user, "
                    f"memory {r['memory_bytes']:6d} B/user -> 10M users: "
                    f"{r['changelog_bytes'] * 1e7 / 2**30:6.1f} GiB changelog, "
                    f"{r['memory_bytes'] * 1e7 / 2**30:6.1f} GiB in memory")
    return rows
