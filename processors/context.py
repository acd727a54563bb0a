"""What an input is applied in: engine time, the config in force, its position, and the engine's
memory outside the hot user state.

`apply(state, input, ctx)` sees nothing else, so a step re-applied after a crash sees the same context
as the first time: engine time is the broker's timestamp of the input's own record (LogAppendTime on
every input topic), which the log returns unchanged when the record is read back; the config is the
one in force for the partition (a config change will arrive as an input record, ordered by the journal
like any other); the position is the record's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from processors.config import EngineConfig
from processors.market import Market
from processors.state import MEMORY_UNKNOWN, UserState

NEVER: Final = 0  # a memory record that does not expire
# One memory record, stored as JSON: [expires at (engine ms, 0: never), topic, offset of the input that wrote
# it, data, the record it replaced as the writing step's state included it (or null)]. Context.remember gives
# the first four; Memory.put adds the fifth. A step holds the records it writes as tuples, their data too (tuples of
# atoms): a step's records live until it stores them, and as lists they were containers the garbage collector
# traversed again and again, a fifth of the core's time; it stops tracking a tuple of atoms on first sight.
Record = tuple[Any, ...]
Lookup = Callable[[str, str], bytes | None]  # (user, key) -> the stored record, or None


def _no_lookup(user: str, key: str) -> bytes | None:
    return None


class Memory:
    """Records the engine keeps per user outside the hot state, each until an engine time: the ids of
    applied inputs (the dedup horizon), deposits, closed orders, fill ids, withdrawal ids. The shell stores
    them in the users table under NUL-prefixed keys (processors.batch.memory_key), in the step's changelog
    batch before the states; read through `lookup`, written here during a step.

    A stored record counts only while the user's stored state includes the input that wrote it (its
    topic/offset at or below `UserState.through` of the state as the step loaded it, `floors`): a record
    stored by a step whose state was never stored (a crash between the two) is ignored and written again
    when the input is re-applied. The loaded state's positions, not the state in hand: the inputs of one
    record (a CommandBatch) share its offset, so once the first of them applied, the state in hand would
    seem to include a record that an unstored attempt wrote for the next one (found by the crash test).

    A record also carries the record it replaced, as the loaded state included it (its `prior`): a step
    that rewrites a key (a deposit credited, then reverted) and is interrupted after its memory records
    were stored but before its states leaves the new record above the state's positions, and the
    re-application must see the one the state holds, not none (found by an adversarial review: the
    reversal was refused UNKNOWN_DEPOSIT on re-application after its ledger lines had gone out).
    """

    __slots__ = ("_base", "_floors", "_lookup", "written")

    def __init__(self, lookup: Lookup = _no_lookup, floors: dict[str, dict[str, int]] | None = None) -> None:
        self._lookup = lookup
        # user -> input positions of the user's stored state when the step loaded it (Step.floors)
        self._floors: dict[str, dict[str, int]] = floors if floors is not None else {}
        # user -> key -> the stored record the loaded state includes ([expires, topic, offset, data]), or None
        self._base: dict[str, dict[str, list[Any] | None]] = {}
        # user -> key -> record written during this step, in the order written
        self.written: dict[str, dict[str, Record]] = {}

    def get(self, state: UserState, key: str, now_ms: int) -> Any:
        """The data of a live record, or None."""
        mine = self.written.get(state.user_id)
        if mine is not None and key in mine:
            record = mine[key]  # written by this step, to the very state in hand
            expires, data = record[0], record[3]
        else:
            base = self._included(state.user_id, key)
            if base is None:
                return None
            expires, data = base[0], base[3]
        if expires != NEVER and expires <= now_ms:
            return None
        return data

    def _included(self, user: str, key: str) -> list[Any] | None:
        """The stored record under `key` that the user's state as loaded includes: the stored one if the
        state holds the input that wrote it, else the one that record replaced if the state holds that."""
        known = self._base.get(user)
        if known is None:
            known = self._base[user] = {}
        elif key in known:
            return known[key]
        found: list[Any] | None = None
        raw = self._lookup(user, key)
        if raw is not None:
            stored: list[Any] = json.loads(raw)  # a list, not a Record: the compiled core checks the difference
            loaded = self._floors.get(user)
            assert loaded is not None, f"{user}: a stored record read before the user's state was loaded"
            if loaded.get(stored[1], -1) >= stored[2]:
                found = stored[:4]
            elif len(stored) > 4 and stored[4] is not None and loaded.get(stored[4][1], -1) >= stored[4][2]:
                found = stored[4]  # written by a step whose state was not stored: what it replaced
        known[key] = found
        return found

    def put(self, user: str, key: str, expires_ms: int, topic: str, offset: int, data: Any,
            fresh: bool = False) -> None:
        """`fresh`: the user's loaded state never needs a record under `key` it includes (it holds the fact
        itself), so the record replaced need not be read to be kept as `prior`."""
        mine = self.written.get(user)
        if mine is None:  # not setdefault: that builds an empty dict on every call
            mine = self.written[user] = {}
        mine[key] = (expires_ms, topic, offset, data, None if fresh else self._included(user, key))

    def forget(self, user: str) -> None:
        """Drop what this step wrote for `user` (the step re-applies that user's inputs)."""
        self.written.pop(user, None)


class Context:
    """Per input: engine time, config, the input's position, the engine's memory. A plain slotted class
    so that building one per input is cheap (compiled, no Python-level call)."""

    __slots__ = ("cfg", "market", "memory", "now_ms", "offset", "topic")

    def __init__(self, now_ms: int, cfg: EngineConfig, memory: Memory | None = None, topic: str = "",
                 offset: int = 0, market: Market | None = None) -> None:
        self.now_ms = now_ms
        self.cfg = cfg
        self.memory = memory if memory is not None else Memory()
        self.topic = topic
        self.offset = offset
        # the partition's prices and rates in force (None: the caller has none; a loan is then refused)
        self.market = market

    def recall(self, state: UserState, key: str) -> Any:
        return self.memory.get(state, key, self.now_ms)

    def remember(self, state: UserState, key: str, data: Any, expires_ms: int, fresh: bool = False) -> None:
        """Keep `data` (atoms, or a tuple of atoms) under `key` until engine time `expires_ms` (NEVER: for good).
        `fresh`: see Memory.put."""
        self.memory.put(state.user_id, key, expires_ms, self.topic, self.offset, data, fresh)

    def let_go(self, state: UserState, key: str, data: Any, expires_ms: int) -> None:
        """A fact the state held and lets go of (an input id past its window, a closed order, a fill id), into
        the memory until `expires_ms`; the state's `memory_until` then covers it. Fresh: while the loaded
        state holds the fact it never needs the record, so the record it replaces need not be read. Called on
        acceptance only (the state's `memory_until` changes)."""
        self.remember(state, key, data, expires_ms, fresh=True)
        if state.memory_until == MEMORY_UNKNOWN:
            # records the state's release wrote as it went expire within a horizon of now, and engine time is
            # several brokers' clocks: twice that
            state.memory_until = max(expires_ms, self.now_ms + 2 * self.cfg.dedup_horizon_ms)
        elif expires_ms > state.memory_until:
            state.memory_until = expires_ms

    def recall_let_go(self, state: UserState, key: str) -> Any:
        """`recall` of a fact the state may have let go: looked up only while its `memory_until` says the memory
        may hold one (most users never fill their windows: no lookup)."""
        until = state.memory_until
        if until == MEMORY_UNKNOWN or self.now_ms < until:
            return self.memory.get(state, key, self.now_ms)
        return None

    def horizon(self) -> int:
        """Expiry of a record written now that must outlive every resend the input topics can hold."""
        return self.now_ms + self.cfg.dedup_horizon_ms
