"""The core's one entry point: apply(state, input, ctx) -> (state, outcome).

Every handler checks everything before it changes anything, so a refused input leaves the state
exactly as it was (never half-applied). The state is updated in place for speed; callers that need
the old state keep a copy (the tests do, and the worker's step reloads the stored state when an input
fails inside the core).

Once, in time: an input is known by its source and id (processors.inputs). An accepted input is
remembered in the state's recent window with its result and a digest of its body: a resend gets its first
answer at once, another body under its id is refused ID_REUSED. When the full window lets it go, it is
remembered in the engine's memory for the dedup horizon from then (`i/<source>/<id>`, processors.context)
with its kind, digest and result, so a resend long after still gets the same answer and applies nothing,
and the same id with another kind or body is refused. An id the window does not know is looked up there
only while the state's `memory_until` says the memory may hold a fact the state let go: most users never
fill their window within a horizon, and their inputs cost no memory record and no lookup. Business keys
(order, fill and withdrawal ids) hold besides (processors.orders, processors.withdrawals). A refusal is never
remembered: the same input sent again once it can apply (funds arrived, the account opened) applies.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import orjson
import xxhash

from processors import checks, liquidation, monitor
from processors.applied import Applied
from processors.context import Context
from processors.inputs import KINDS, USER, Kind
from processors.messages import Command, Event, LedgerLine, Outcome, Result
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import MEMORY_UNKNOWN, UserState, accepted, entry_text, input_key
from processors.withdrawals import park

_ACCOUNT: Final = ""  # the parked-events key of chain events waiting for the account to open
# The engine-memory key of when the user's oldest parked chain event falls due: the record expires then,
# and the clock tick that sweeps it calls `tick` for the user (processors.batch), so a chain event that
# waits for an account that never opens is given up on time, even if the user never sends anything.
PARKED_DUE: Final = "p"
# The engine-memory key prefix of an accepted input the window let go (+ its input key: source and id).
INPUT_RECORD: Final = "i/"
# Bound once: compiled, `orjson.dumps(...)` looks the module up and then its attribute on every call (2% of the
# core), and a keyword argument costs a call with keywords.
_DUMPS: Final = orjson.dumps
_SORT_KEYS: Final = orjson.OPT_SORT_KEYS
_XXH3_64_HEX: Final = xxhash.xxh3_64_hexdigest
_PARKED: Final = Reason.PARKED  # an enum member is a Python-level attribute lookup; this is once per input


def apply(state: UserState | None, cmd: Command, ctx: Context) -> tuple[UserState, Outcome]:
    if state is None:
        state = UserState(cmd.user_id, opened=False)
    assert state.user_id == cmd.user_id, f"{cmd.id} for {cmd.user_id} applied to {state.user_id}"
    assert ctx.offset >= state.through.get(ctx.topic, -1), "a topic's inputs apply in offset order"
    outcome = _decide(state, cmd, ctx)
    # After deciding: while deciding, the state's positions say which stored memory records it includes.
    state.through[ctx.topic] = ctx.offset
    return state, outcome


def _decide(state: UserState, cmd: Command, ctx: Context) -> Outcome:
    spec = KINDS.get(cmd.kind)
    source = cmd.source or (spec.source if spec is not None else USER)
    try:
        if spec is None:
            raise Rejected(Reason.MALFORMED_COMMAND, f"unknown input kind {cmd.kind!r}")
        if source != spec.source:
            raise Rejected(Reason.WRONG_SOURCE, f"{cmd.kind} is taken from the {spec.source} source only, "
                                                f"not from the {source} source")
        checks.ident(ctx.cfg, "id", cmd.id)
    except Rejected as refused:
        return _refused(cmd, refused)
    if not cmd.source:
        cmd = cmd._replace(source=source)  # in-process callers may leave it out: handlers name it in entry ids
    key = input_key(source, cmd.id)
    digest = ""
    if not spec.by_record:
        digest = _digest(cmd)
        window = state.applied.get(key)
        if window is not None:
            ts_ms, kind, reason, detail, count, prior_digest = accepted(window)
            if not prior_digest:  # a window stored before state version 6: the digest is in the memory record
                known = ctx.recall(state, INPUT_RECORD + key)
                prior_digest = known[1] if known is not None else digest
            if kind != cmd.kind or not _same_body(prior_digest, digest, cmd):
                return _refused(cmd, _reused(cmd, kind))
            return Outcome(Result(cmd.id, ts_ms, cmd.user_id, kind, "ACCEPTED", reason, detail, count))
        known = ctx.recall_let_go(state, INPUT_RECORD + key)
        if known is not None:
            kind, known_digest, ts_ms, reason, detail, count = known
            if kind != cmd.kind or not _same_body(known_digest, digest, cmd):
                return _refused(cmd, _reused(cmd, kind))
            return Outcome(Result(cmd.id, ts_ms, cmd.user_id, kind, "ACCEPTED", reason, detail, count))
    expired = _expire_parked(state, ctx) if state.parked else ()
    seq_before = state.seq
    try:
        applied = _handle(state, cmd, ctx, spec)
    except Rejected as refused:
        assert state.seq == seq_before, f"{cmd.id} refused after writing ledger lines"
        return Outcome(_refused(cmd, refused).result, (), (), expired)
    lines = applied.lines
    assert state.seq == seq_before + len(lines), "every line advances the user's sequence once"
    if applied.flag is _PARKED:
        _mark_parked_due(state, ctx)
    flag = applied.flag.value if applied.flag is not None else None
    result = Result(cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "ACCEPTED", flag, applied.detail, len(lines))
    if not spec.by_record:
        if state.memory_until == MEMORY_UNKNOWN:
            # Stored before version 9, when inputs (before 8), closed orders and fill ids were remembered in the
            # memory as they applied: the last of those expires within a horizon of now (twice that: engine
            # time is several brokers' clocks). Set once accepted: a refusal leaves the state as it was.
            state.memory_until = ctx.now_ms + 2 * ctx.cfg.dedup_horizon_ms
        if state.window_ms == MEMORY_UNKNOWN:
            # before version 8: the window's inputs applied within a horizon of now
            state.window_ms = ctx.now_ms + ctx.cfg.dedup_horizon_ms
        elif ctx.now_ms > state.window_ms:
            state.window_ms = ctx.now_ms
        let_go = state.remember(key, entry_text(cmd.ts_ms, cmd.kind, flag, len(lines), digest, applied.detail),
                                ctx.cfg.applied_window)
        if let_go is not None:
            _remember_past_window(state, ctx, let_go)
    events = applied.events
    if monitor.watched(state):
        events += monitor.evaluate(state, ctx, key)
    return Outcome(result, lines, events, expired)


def _remember_past_window(state: UserState, ctx: Context, entries: list[tuple[str, str]]) -> None:
    """Inputs the window let go, into the engine's memory until a horizon from the latest engine time of the
    window's inputs (`window_ms`), or from now if later: at least a horizon from when each applied, whatever
    topic the input that lets them go came from (a review found the horizon cut short when it came from a
    topic read days behind)."""
    until = max(ctx.now_ms, state.window_ms) + ctx.cfg.dedup_horizon_ms
    for key, text in entries:
        ts_ms, kind, reason, detail, count, digest = accepted(text)
        # "": an entry of a window stored before version 6. From version 5 its record was written as it applied,
        # and stays; a version 3 or 4 entry (before the memory) has none, and gets one that knows no body.
        if not digest and ctx.recall(state, INPUT_RECORD + key) is not None:
            continue
        ctx.let_go(state, INPUT_RECORD + key, (kind, digest, ts_ms, reason, detail, count), until)



def _handle(state: UserState, cmd: Command, ctx: Context, spec: Kind) -> Applied:
    if not state.opened and cmd.kind != "OpenAccount":
        if spec.from_chain:
            # The chain's facts are never refused for being early: the account may open a moment later
            # (its opening and the deposit travel on two topics with no order between them).
            return park(state, cmd, ctx, _ACCOUNT)
        raise Rejected(Reason.UNKNOWN_USER, f"user {cmd.user_id} has no account: send OpenAccount first")
    if spec.blocked_when_frozen and state.status == "frozen":
        raise Rejected(Reason.ACCOUNT_FROZEN, "the account is frozen by risk; contact support")
    applied = spec.handler(state, cmd, ctx)
    if cmd.kind == "OpenAccount" and _ACCOUNT in state.parked:
        return Applied(applied.lines + _release_for_account(state, ctx), applied.events, applied.flag, applied.detail)
    return applied


def _release_for_account(state: UserState, ctx: Context) -> tuple[LedgerLine, ...]:
    """The chain events that waited for the account, applied in arrival order now that it is open. Their
    lines are announced by the opening's result; one that cannot apply is dropped (its PARKED result
    stands, and the watcher's resend applies it)."""
    lines: tuple[LedgerLine, ...] = ()
    for cmd_id, ts_ms, kind, body, _ in state.parked.pop(_ACCOUNT):
        waiting = Command(cmd_id, ts_ms, state.user_id, kind, body, KINDS[kind].source)
        seq_before = state.seq
        try:
            lines += KINDS[kind].handler(state, waiting, ctx).lines
        except Rejected:
            assert state.seq == seq_before, f"{cmd_id} refused after writing ledger lines"
    return lines


def tick(state: UserState, ctx: Context, cause: str) -> tuple[UserState, Outcome]:
    """A system touch of this user (a clock tick when its PARKED_DUE record expired; a price or a rate moving
    its margin accounts): parked chain events that waited longer than `parked_ttl_ms` of engine time are given
    up, the next due time is marked for those left, liquidations whose cooldown is over start their next part,
    and the margin accounts are re-valued. `cause`: the system input's id, which names the margin events it
    sends and the ledger entries it writes. The outcome's result is the touch's own (never emitted); its `more`,
    the final results of parked events given up."""
    assert ctx.offset >= state.through.get(ctx.topic, -1), "a topic's inputs apply in offset order"
    expired = _expire_parked(state, ctx) if state.parked else ()
    _mark_parked_due(state, ctx)
    lines: tuple[LedgerLine, ...] = ()
    events: tuple[Event, ...] = ()
    if state.liquidations:
        lines, events = liquidation.resume(state, ctx, cause)
    if monitor.watched(state):
        events += monitor.evaluate(state, ctx, f"system/{cause}")
    state.through[ctx.topic] = ctx.offset
    touch = Result(cause, ctx.now_ms, state.user_id, "SystemTouch", "ACCEPTED", None, "", len(lines))
    return state, Outcome(touch, lines, events, expired)


def _mark_parked_due(state: UserState, ctx: Context) -> None:
    if state.parked:
        oldest = min(entry[4] for entries in state.parked.values() for entry in entries)
        # the engine time from which it no longer waits (_expire_parked's cutoff)
        ctx.remember(state, PARKED_DUE, None, oldest + ctx.cfg.parked_ttl_ms)


def _expire_parked(state: UserState, ctx: Context) -> tuple[Result, ...]:
    """Parked chain events whose withdrawal or account never came within `parked_ttl_ms` of engine time
    are given up: each gets a final PARKED_EXPIRED result, which operations alert on."""
    cutoff = ctx.now_ms - ctx.cfg.parked_ttl_ms
    out: list[Result] = []
    for waits_for in list(state.parked):
        keep = []
        for entry in state.parked[waits_for]:
            if entry[4] > cutoff:
                keep.append(entry)
                continue
            what = f"withdrawal {waits_for}" if waits_for else "the account"
            out.append(Result(entry[0], entry[1], state.user_id, entry[2], "REJECTED", Reason.PARKED_EXPIRED.value,
                              f"waited for {what} until engine time {ctx.now_ms}; check the chain and the request",
                              0))
        if keep:
            state.parked[waits_for] = keep
        else:
            del state.parked[waits_for]
    return tuple(out)


def _refused(cmd: Command, refused: Rejected) -> Outcome:
    return Outcome(Result(cmd.id, cmd.ts_ms, cmd.user_id, cmd.kind, "REJECTED", refused.reason.value,
                          refused.detail, 0))


def _reused(cmd: Command, kind: str) -> Rejected:
    return Rejected(Reason.ID_REUSED, f"id {cmd.id} was used for another input ({kind}); use a new id")


def _digest(cmd: Command) -> str:
    """The body's fingerprint: the same id with another body is another input, not a resend. xxh3 (64 bits)
    of the body as JSON with sorted keys, marked "x"; a fifth of the cost of the first fingerprint
    (`_legacy_digest`), which memory records written before still hold. Not collision-resistant against
    a deliberate search, and need not be: a user's ids are deduplicated among that user's own inputs, so
    a crafted collision can only make the user's own second input count as a resend of their first."""
    try:
        canonical = _DUMPS(cmd.body, None, _SORT_KEYS)
    except TypeError:  # an integer past 64 bits (Avro's long cannot carry one; an in-process caller might)
        canonical = json.dumps(cmd.body, sort_keys=True, separators=(",", ":")).encode()
    return "x" + _XXH3_64_HEX(canonical)


def _legacy_digest(cmd: Command) -> str:
    body: Any = cmd.body
    return hashlib.blake2b(repr(sorted(body.items())).encode(), digest_size=8).hexdigest()


def _same_body(known: str, digest: str, cmd: Command) -> bool:
    """`known` "": the body is not known (an input applied before version 6 whose window entry had no digest
    and no memory record): any body under its id is its resend, as the window then answered."""
    return known == digest or not known or (not known.startswith("x") and known == _legacy_digest(cmd))
