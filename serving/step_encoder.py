"""Per-user encoder state: one step per event instead of a pass over the session.

A bundle whose encoder counts positions from the window's start (``positions =
"start"``) carries two more graphs beside ``encoder.onnx``:

* ``prefill.onnx``: a left-padded window ``item_seq`` [B, L] in; the user vector
  [B, D] and the state out: keys and values [layers, B, H, L, Dh] (float16) and each
  block's input summed over the window [layers, B, D];
* ``step.onnx``: one new item per user (``item``, its position ``pos``) and the state
  so far in (each block's keys and values [B, H, T, Dh] as inputs ``keys_0``, …,
  ``values_0``, …, left-padded; ``past`` [B, T] False on padding; ``sums``; ``count``
  the items so far); the user vector and the new item's keys, values and sums out. A
  step model from an earlier export takes the state stacked (``keys``, ``values``
  [layers, B, H, T, Dh]) and is served as well.

:class:`StepEncoder` keeps that state per user in memory, in float16, least recently
used first out once the cache passes its byte budget. Each entry remembers the exact
window (item indexes) it encodes, and it is used only when the window asked for is
that one plus up to ``MAX_STEPS`` new items (a step each) or that one unchanged (the
stored vector);
anything else (a miss, an evicted user, a user another worker served meanwhile, the
window's start moving on, an item read differently) is a fresh prefill. A stale
state can therefore never be read: what an entry encodes is checked, not assumed. The
cache belongs to one bundle's encoder, so a swap starts from an empty one. Windows
shorter than ``STEP_FROM`` items go through the plain encoder, uncached.

The same entry holds the user's session as the funnel reads it (item indexes, and the
seen set), brought up to date by the session's new items alone where the stored session
is the cached one moved on (:meth:`StepEncoder.sessions`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from serving.encoder import Encoder
from serving.index import SeenItems
from serving.manifest import STEP_FILES
from streamrec.sequences import left_pad, pad_batch

PREFILL, STEP = STEP_FILES
# Windows and sessions shorter than this are encoded whole and not cached: below it the
# plain encoder costs less than a step with its bookkeeping (docs/benchmarks.md, "Per-event
# cost and session length").
STEP_FROM = 8
# A user with up to this many events since the cached window (several in one batch, or
# served by another worker meanwhile) takes that many steps; more: one prefill.
MAX_STEPS = 4
PREFILL_INPUTS = ("item_seq",)
OUTPUTS = ("user_vec", "new_keys", "new_values", "new_sums")


@dataclass(slots=True)
class _State:
    items: list[int]  # the window this state encodes
    keys: np.ndarray  # [layers, H, capacity, Dh] float16; the first len(items) columns real
    values: np.ndarray
    sums: np.ndarray  # [layers, D] float32
    vec: np.ndarray  # [D] float32, the window's user vector

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes + self.sums.nbytes + self.vec.nbytes + 8 * len(self.items)


@dataclass(slots=True)
class _Session:
    """A session as the funnel reads it: the stored item ids and event count it was made
    from, the live catalogue's proxies it was encoded with (new items read as bundle
    items), the item indexes, and how many times each occurs (its keys: the items the user
    has seen)."""

    ids: list[str]
    n: int
    live: Mapping[str, int]
    encoded: list[int]
    counts: dict[int, int]
    seen: SeenItems  # the counts' keys, with their array for masking

    @property
    def nbytes(self) -> int:
        return 8 * (len(self.ids) + len(self.encoded)) + 72 * len(self.counts) + 64  # 8: the array


@dataclass(slots=True)
class _User:
    state: _State | None = None
    session: _Session | None = None

    @property
    def nbytes(self) -> int:
        return ((self.state.nbytes if self.state is not None else 0)
                + (self.session.nbytes if self.session is not None else 0))


@dataclass
class CacheStats:
    """Counts since the encoder was built: users served by one step, by the stored vector,
    by a prefill (and why), by the plain encoder (``short`` windows), entries evicted, and
    sessions encoded by their new items only (``extended``) or whole (``sessions_encoded``,
    short ones not counted)."""

    steps: int = 0
    unchanged: int = 0
    prefills: int = 0
    short: int = 0
    evictions: int = 0
    extended: int = 0
    sessions_encoded: int = 0
    by_reason: dict[str, int] = field(default_factory=lambda: {"new": 0, "changed": 0})


class StepEncoder:
    """``encode(users, windows) -> [B, D] float32``, with per-user state (module doc), and
    :meth:`sessions`, each user's encoded session kept up to date by its new items.
    Thread-safe (one lock: a worker computes one batch at a time)."""

    def __init__(self, prefill: ort.InferenceSession, step: ort.InferenceSession, max_len: int,
                 budget_bytes: int, encoder: Encoder, min_len: int = STEP_FROM) -> None:
        self.prefill, self.step, self.encoder = prefill, step, encoder
        self.min_len = min_len
        # the exporter drops an input the graph does not read (``count`` without a low-pass branch)
        self._step_inputs = {i.name for i in step.get_inputs()}
        self._stacked = "keys" in self._step_inputs  # an earlier export's layout
        self.max_len = max_len
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.stats = CacheStats()
        self._cache: OrderedDict[str, _User] = OrderedDict()
        self._lock = threading.Lock()
        self._taken: dict[str, int] = {}
        # the step batch's keys and values, reused from call to call: fresh arrays of a few
        # MB each cost page faults on first touch (as much as the copy into them)
        self._scratch = np.empty(0, dtype=np.float16)

    def __len__(self) -> int:
        return len(self._cache)

    def take_counts(self) -> dict[str, int]:
        """Users served by each outcome (``step``, ``unchanged``, ``prefill``, ``short``) and
        entries ``evicted`` since the last call (a worker's metrics read them once per batch)."""
        with self._lock:
            now = {"step": self.stats.steps, "unchanged": self.stats.unchanged,
                   "prefill": self.stats.prefills, "short": self.stats.short,
                   "evicted": self.stats.evictions}
            delta = {k: v - self._taken.get(k, 0) for k, v in now.items()}
            self._taken = now
            return delta

    def _entry(self, user: str) -> _User:
        e = self._cache.get(user)
        if e is None:
            e = self._cache[user] = _User()
        else:
            self._cache.move_to_end(user)
        return e

    def sessions(self, users: Sequence[str], histories: Sequence[Sequence[str]], counts: Sequence[int],
                 live: Mapping[str, int], encode: Callable[[Sequence[str]], list[int]],
                 ) -> list[tuple[list[int], AbstractSet[int]]]:
        """Each history (a session's stored items, the last of its count of events) as item
        indexes (``encode``: the bundle's reading with the live catalogue's proxies ``live``)
        and the set of them. Where the cached session is this one less items dropped from
        its front and plus new ones, only those are encoded; otherwise the whole history
        (and a history shorter than ``min_len`` always, uncached). The lists and sets
        returned must not be changed by the caller."""
        out: list[tuple[list[int], AbstractSet[int]]] = []
        row_of: dict[str, int] = {}  # each user's latest row in this call
        with self._lock:
            for user, history, count in zip(users, histories, counts, strict=True):
                if len(history) < self.min_len:
                    encoded = encode(history)
                    out.append((encoded, set(encoded)))
                    continue
                if (r := row_of.get(user)) is not None:  # twice in one call: the earlier
                    out[r] = (out[r][0], set(out[r][1]))  # row keeps its own seen items
                row_of[user] = len(out)
                e = self._entry(user)
                before = e.nbytes
                got = self._extend(e.session, history, count, live, encode)
                if got is None:
                    encoded = encode(history)
                    times: dict[int, int] = {}
                    for x in encoded:
                        times[x] = times.get(x, 0) + 1
                    got = e.session = _Session(list(history), count, live, encoded, times,
                                               SeenItems(times))
                    self.stats.sessions_encoded += 1
                else:
                    self.stats.extended += 1
                self.bytes += e.nbytes - before
                out.append((got.encoded, got.seen))
            self._evict()
        return out

    @staticmethod
    def _extend(s: _Session | None, history: Sequence[str], count: int, live: Mapping[str, int],
                encode: Callable[[Sequence[str]], list[int]]) -> _Session | None:
        """``s`` brought up to ``history`` in place, or None where ``history`` is not ``s``
        with ``count - s.n`` new items appended and as many older ones dropped as the
        stored length says."""
        if s is None or (s.live is not live and (s.live or live)):  # other proxies: read anew
            return None
        new = count - s.n
        dropped = len(s.ids) + new - len(history)
        if new < 0 or new > len(history) or not 0 <= dropped <= len(s.ids):
            return None
        kept = len(history) - new
        if history[:kept] != s.ids[dropped:]:  # compared in C: the list, not per item in Python
            return None
        counts = s.counts
        gone = encode(s.ids[:dropped]) if dropped else []
        for x in gone:
            left = counts[x] - 1
            if left:
                counts[x] = left
            else:
                del counts[x]
                s.seen.removed()
        added = encode(history[kept:]) if new else []
        fresh = []
        for x in added:
            n = counts.get(x, 0)
            counts[x] = n + 1
            if not n:
                fresh.append(x)
        s.seen.added(fresh)
        if gone or added:
            s.encoded = s.encoded[len(gone):] + added
        s.ids = list(history)
        s.n = count
        return s

    def encode(self, users: Sequence[str], windows: Sequence[Sequence[int]]) -> np.ndarray:
        """User vectors for ``windows`` (item indexes, each non-empty, at most ``max_len``),
        the state of each of ``users`` used where it encodes the window's prefix."""
        with self._lock:
            return self._encode(users, windows)

    def _encode(self, users: Sequence[str], windows: Sequence[Sequence[int]]) -> np.ndarray:
        out: list[np.ndarray | None] = [None] * len(users)
        steps: list[int] = []
        fills: list[int] = []
        short: list[int] = []
        again: set[int] = set()
        cache, stats = self._cache, self.stats
        seen: set[str] = set()
        for r, (u, w) in enumerate(zip(users, windows, strict=True)):
            if len(w) < self.min_len:
                short.append(r)
                continue
            if u in seen:  # twice in one call: the second is computed from scratch, not stored
                fills.append(r)
                again.add(r)
                continue
            seen.add(u)
            entry = cache.get(u)
            e = entry.state if entry is not None else None
            if e is not None:
                n = len(e.items)
                if n < len(w) <= n + MAX_STEPS and e.items == list(w[:n]):
                    steps.append(r)  # one step per new item (events since the last batch)
                    continue
                if len(w) == n and e.items == list(w):
                    out[r] = e.vec
                    stats.unchanged += 1
                    cache.move_to_end(u)
                    continue
                stats.by_reason["changed"] += 1
            else:
                stats.by_reason["new"] += 1
            fills.append(r)
        if short:
            vecs = self.encoder.encode(pad_batch([windows[r] for r in short], self.max_len))
            for r, vec in zip(short, vecs, strict=True):
                out[r] = vec
            stats.short += len(short)
        if steps:
            todo = steps
            while todo:  # the j-th new item of every user that has one, then the next
                self._steps(todo, users, [windows[r][len(cache[users[r]].state.items)]  # type: ignore[union-attr]
                                          for r in todo], out)
                todo = [r for r in todo if len(cache[users[r]].state.items) < len(windows[r])]  # type: ignore[union-attr]
            stats.steps += len(steps)
        if fills:
            self._prefills(fills, users, windows, out, again)
        self._evict()
        return np.stack(out).astype(np.float32, copy=False)  # type: ignore[arg-type]

    def _steps(self, rows: list[int], users: Sequence[str], new: Sequence[int],
               out: list[np.ndarray | None]) -> None:
        """One step for each of ``rows``: item ``new[i]`` onto the state of ``users[rows[i]]``."""
        states = [self._cache[users[r]].state for r in rows]
        assert all(s is not None for s in states)
        layers, heads, _, dh = states[0].keys.shape  # type: ignore[union-attr]
        T = max(len(s.items) for s in states)  # type: ignore[union-attr]
        B = len(rows)
        shape = (layers, B, heads, T, dh)
        size = layers * B * heads * T * dh
        if self._scratch.size < 2 * size:  # sized for the longest window: grows with B only
            self._scratch = np.empty(2 * size // T * self.max_len, dtype=np.float16)
        keys = self._scratch[:size].reshape(shape)  # padding zeroed below
        values = self._scratch[size:2 * size].reshape(shape)
        past = np.zeros((B, T), dtype=bool)
        sums = np.empty((layers, B, states[0].sums.shape[1]), dtype=np.float32)  # type: ignore[union-attr]
        count = np.empty(B, dtype=np.float32)
        item = np.empty(B, dtype=np.int64)
        for b, (r, s) in enumerate(zip(rows, states, strict=True)):
            assert s is not None
            t = len(s.items)
            keys[:, b, :, T - t:] = s.keys[:, :, :t]
            values[:, b, :, T - t:] = s.values[:, :, :t]
            if t < T:
                keys[:, b, :, :T - t] = 0
                values[:, b, :, :T - t] = 0
            past[b, T - t:] = True
            sums[:, b] = s.sums
            count[b] = t
            item[b] = new[b]
        feed = {"item": item, "pos": count.astype(np.int64), "past": past, "sums": sums, "count": count}
        if self._stacked:
            feed |= {"keys": keys, "values": values}
        else:  # each block's state as its own input: contiguous views, no copy
            feed |= {f"keys_{i}": keys[i] for i in range(layers)}
            feed |= {f"values_{i}": values[i] for i in range(layers)}
        vec, nk, nv, ns = self.step.run(list(OUTPUTS), {k: feed[k] for k in self._step_inputs})
        for b, (r, s) in enumerate(zip(rows, states, strict=True)):
            assert s is not None
            t = len(s.items)
            if t == s.keys.shape[2]:  # full: double the capacity (at most max_len)
                self.bytes -= s.nbytes
                cap = min(self.max_len, max(2 * t, t + 1))
                s.keys, s.values = _grow(s.keys, cap), _grow(s.values, cap)
                self.bytes += s.nbytes
            s.keys[:, :, t] = nk[:, b, :, 0]
            s.values[:, :, t] = nv[:, b, :, 0]
            s.sums = ns[:, b].copy()
            s.vec = vec[b].copy()
            s.items.append(int(item[b]))
            self.bytes += 8
            out[r] = s.vec
            self._cache.move_to_end(users[r])

    def _prefills(self, rows: list[int], users: Sequence[str], windows: Sequence[Sequence[int]],
                  out: list[np.ndarray | None], again: set[int]) -> None:
        ws = [windows[r] for r in rows]
        L = max(len(w) for w in ws)
        vec, k, v, s = self.prefill.run(list(OUTPUTS), {"item_seq": left_pad(ws, L)})
        for b, (r, w) in enumerate(zip(rows, ws, strict=True)):
            out[r] = vec[b]
            if r in again:
                continue
            t = len(w)
            cap = min(self.max_len, max(t + 1, 2))
            keys = np.zeros((k.shape[0], k.shape[2], cap, k.shape[4]), dtype=np.float16)
            vals = np.zeros_like(keys)
            keys[:, :, :t] = k[:, b, :, L - t:]
            vals[:, :, :t] = v[:, b, :, L - t:]
            e = self._entry(users[r])
            before = e.nbytes
            e.state = _State(list(w), keys, vals, s[:, b].copy(), vec[b].copy())
            self.bytes += e.nbytes - before
        self.stats.prefills += len(rows)

    def _evict(self) -> None:
        while self.bytes > self.budget_bytes and self._cache:
            _, e = self._cache.popitem(last=False)
            self.bytes -= e.nbytes
            self.stats.evictions += 1


def replay_error(probe: StepEncoder, windows: Sequence[Sequence[int]],
                 reference: Callable[[np.ndarray], np.ndarray], every: int = 1) -> float:
    """How far the step encoder ``probe`` (fresh, caching from one item) strays from the
    full encoder: each of ``windows`` built up one item at a time through it, the user
    vectors compared with ``reference`` (left-padded windows in, vectors out) at every
    ``every``-th length, at each window's full length and at the last; the largest
    absolute difference, or inf as soon as a step gives a non-finite vector."""
    worst = 0.0
    users = [str(u) for u in range(len(windows))]
    longest = max((len(w) for w in windows), default=0)
    for t in range(1, longest + 1):
        rows = [u for u, w in enumerate(windows) if len(w) >= t]
        prefixes = [list(windows[u][:t]) for u in rows]
        got = probe.encode([users[u] for u in rows], prefixes)
        if not np.isfinite(got).all():
            return float("inf")
        if (t - 1) % every == 0 or t == longest or any(len(windows[u]) == t for u in rows):
            worst = max(worst, float(np.abs(got - reference(left_pad(prefixes, t))).max()))
    return worst


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.zeros(a.shape[:2] + (cap,) + a.shape[3:], dtype=a.dtype)
    out[:, :, :a.shape[2]] = a
    return out
