"""One user's state: balances per (sub-account, asset), open holds, withdrawals, deposits, and the
recent input ids that make every input apply once.

Serialized as versioned JSON (not pickle) so a changelog written by one release is read by the next.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from processors.messages import Result, Value

# positions in a balance triple
AVAILABLE: Final = 0
FROZEN: Final = 1
BORROWED: Final = 2
# 2: applied results stored whole (with user_id); 3: parked chain events; 4: input positions (`through`);
# 5: the applied window keyed by (source, id), parked events with their engine time, deposits moved out
# to the engine's memory (processors.context); 6: each window entry ends with its input body's digest;
# 7: a window entry holds what its key and the state do not (`Accepted`); 8: `memory_until`, `window_ms`;
# 9: recently closed orders (`closed`), each open order's latest fill ids (`Hold.fills`), the window's
# entries as text (`entry_text`) by input key; 10: margin loans' interest and index readings (`loans`), margin
# accounts' bands (`bands`); 11: liquidations under way (`liquidations`)
STATE_VERSION: Final = 11
# A version 3 state has no positions: read as "none recorded". Versions 3 and 4 keep their deposits in
# the state (`legacy_deposits`, read-only: new deposits are remembered outside the hot state).
READS_VERSIONS: Final = frozenset({3, 4, 5, 6, 7, 8, 9, 10, 11})

AccountStatus = Literal["normal", "frozen"]
WithdrawalStatus = Literal["pending_approval", "approved", "broadcast", "completed", "failed", "cancelled"]
DepositStatus = Literal["seen", "credited", "below_minimum", "reverted"]
# A window entry: what an accepted input's result says besides its id and user (the entry's key and the state
# say those) and its status (ACCEPTED: a refusal is never remembered), then its body's digest, which tells a
# resend from another input under the same id ("" in a window stored before version 6: the digest is in the
# input's memory record). (client ts_ms, kind, reason, detail, ledger lines, digest); kept as its text
# (`entry_text`), read only when its input is sent again or the window lets it go.
Accepted = tuple[int, str, str | None, str, int, str]
MEMORY_UNKNOWN: Final = -1  # UserState.memory_until of a state stored before version 9 (window_ms: before 8)
# json.dumps with options builds an encoder per call. UTF-8 as is, as orjson writes it: an escape takes up to
# 12 bytes for a 4-byte character, and the state's byte bound counts ids in UTF-8.
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_DUMPS: Final = orjson.dumps  # bound once (processors.engine)


def json_text(value: Any) -> str:
    """Compact JSON, exact. orjson first (several times faster); amounts in minor units pass 64 bits (100 ETH
    is 10**20 wei), which orjson refuses, so those go through the json module. Read back with `json.loads`:
    orjson.loads would turn such an integer into a float."""
    try:
        return _DUMPS(value).decode()
    except TypeError:
        return _JSON.encode(value)


def to_json(value: Any) -> bytes:
    """`json_text` as bytes. Via text: orjson's bytes come cut from a 1 KB buffer outside Python's small-object
    allocator, and a step holding thousands of them until the write is acknowledged paid 2.5 µs each (0.3 µs
    so)."""
    return json_text(value).encode()


def entry_text(ts_ms: int, kind: str, reason: str | None, count: int, digest: str, detail: str) -> str:
    """An Accepted entry as the window keeps and stores it: "ts_ms|kind|reason|lines|digest|detail". One string
    per input instead of a tuple and its digest: an object less that the state keeps, and none the garbage
    collector traverses (a tuple is tracked until its first collection: 6% of the core went to that).
    Only `detail` can hold a "|" (kinds, reasons, numbers and digests cannot), so it goes last."""
    return f"{ts_ms}|{kind}|{reason or ''}|{count}|{digest}|{detail}"


def accepted(text: str) -> Accepted:
    """The entry `entry_text` made."""
    ts_ms, kind, reason, count, digest, detail = text.split("|", 5)
    return int(ts_ms), kind, reason or None, detail, int(count), digest


OPEN_WITHDRAWAL: Final[frozenset[str]] = frozenset({"pending_approval", "approved", "broadcast"})


class Hold(Value):
    """An open order's hold. A plain class, not a dataclass: compiled, a dataclass is built through its
    Python-level __init__ (3% of the core, one order in five inputs on the bench workload). Mutable: equal by
    value, never hashed."""

    __slots__ = ("account", "asset", "fills", "remaining")

    def __init__(self, account: str, asset: str, remaining: int, fills: list[str] | None = None) -> None:
        assert remaining > 0, "an empty hold is closed, not kept"
        self.account = account
        self.asset = asset
        self.remaining = remaining
        # the ids of the latest fills settled on the order, oldest first (EngineConfig.fills_per_hold; older
        # ones are in the engine's memory: processors.orders)
        self.fills: list[str] = fills if fills is not None else []

    def fields(self) -> tuple[str, str, int, list[str]]:
        return (self.account, self.asset, self.remaining, self.fills)


class Withdrawal(Value):
    """A withdrawal the user asked for, until it is finished and pruned. A plain class, as `Hold`."""

    __slots__ = ("account", "address", "amount", "approvals", "asset", "chain", "fee", "required_approvals",
                 "status", "tx_hash")

    def __init__(self, account: str, chain: str, asset: str, amount: int, fee: int, address: str,
                 status: WithdrawalStatus, required_approvals: int, approvals: list[str] | None = None,
                 tx_hash: str = "") -> None:
        self.account = account
        self.chain = chain
        self.asset = asset
        self.amount = amount
        self.fee = fee
        self.address = address
        self.status: WithdrawalStatus = status
        self.required_approvals = required_approvals
        self.approvals: list[str] = approvals if approvals is not None else []
        self.tx_hash = tx_hash

    def fields(self) -> tuple[str, str, str, int, int, str, WithdrawalStatus, int, list[str], str]:
        return (self.account, self.chain, self.asset, self.amount, self.fee, self.address, self.status,
                self.required_approvals, self.approvals, self.tx_hash)

    @property
    def frozen(self) -> int:
        """What this withdrawal keeps frozen while open."""
        return self.amount + self.fee


class Loan(Value):
    """What a margin account owes on its loan of one asset besides the principal (the balance's `borrowed`):
    interest booked and not paid, and the asset's borrow index through which it is booked (processors.rates:
    what the principal owes more is principal x (index now - `index`)). A plain class, as `Hold`."""

    __slots__ = ("index", "interest")

    def __init__(self, interest: int, index: int) -> None:
        assert interest >= 0 and index >= 0
        self.interest = interest
        self.index = index

    def fields(self) -> tuple[int, int]:
        return (self.interest, self.index)


class SellOrder(Value):
    """An open liquidation order (processors.liquidation): what is left to sell of `sell` (frozen in the account
    meanwhile) for `buy`, and the ids of the fills settled on it. A plain class, as `Hold`."""

    __slots__ = ("buy", "fills", "remaining", "sell")

    def __init__(self, sell: str, buy: str, remaining: int, fills: list[str] | None = None) -> None:
        assert remaining > 0, "a filled order is closed, not kept"
        self.sell = sell
        self.buy = buy
        self.remaining = remaining
        self.fills: list[str] = fills if fills is not None else []

    def fields(self) -> tuple[str, str, int, list[str]]:
        return (self.sell, self.buy, self.remaining, self.fills)


class Liquidation(Value):
    """A margin account's liquidation, from its `Liquidate` input (`id`) until its debts are paid: the parts
    started, the engine time from which the next part may start (0 while a part's orders are open), and the
    open orders of the current part by order id. A plain class, as `Hold`."""

    __slots__ = ("due_ms", "id", "orders", "part")

    def __init__(self, id: str, part: int, due_ms: int, orders: dict[str, SellOrder] | None = None) -> None:
        self.id = id
        self.part = part
        self.due_ms = due_ms
        self.orders: dict[str, SellOrder] = orders if orders is not None else {}

    def fields(self) -> tuple[str, int, int, dict[str, SellOrder]]:
        return (self.id, self.part, self.due_ms, self.orders)


@dataclass(slots=True)
class Deposit:
    asset: str
    amount: int
    account: str
    status: DepositStatus


@dataclass(slots=True)
class UserState:
    user_id: str
    # False until OpenAccount: the state then only remembers the inputs it refused, so that a
    # redelivered input gets its first answer again even after the account was opened.
    opened: bool = True
    kyc_tier: int = 0
    region: str = ""
    status: AccountStatus = "normal"
    # (sub-account, asset) -> [available, frozen, borrowed]; a list so the core updates it in place
    balances: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    withdrawals: dict[str, Withdrawal] = field(default_factory=dict)
    # (margin sub-account, asset) -> its loan's interest and index reading, while it owes principal or interest
    loans: dict[tuple[str, str], Loan] = field(default_factory=dict)
    # margin sub-account -> its band of margin level (processors.margin.band), while not healthy
    bands: dict[str, int] = field(default_factory=dict)
    # margin sub-account -> its liquidation, while under way: the account is locked (processors.liquidation)
    liquidations: dict[str, Liquidation] = field(default_factory=dict)
    # deposits of a state written before version 5 (since then they live in the engine's memory)
    legacy_deposits: dict[str, Deposit] = field(default_factory=dict)
    # withdrawal id ("" for the account itself) -> chain events that arrived before it, oldest first:
    # [input id, client ts_ms, kind, body, engine time parked]
    parked: dict[str, list[list[Any]]] = field(default_factory=dict)
    # input key (processors.engine.input_key: source and id) -> its Accepted entry as text (`entry_text`), the
    # most recent `EngineConfig.applied_window` accepted inputs, oldest first.
    applied: dict[str, str] = field(default_factory=dict)
    # order id -> engine time until which it counts as closed (a horizon from its closing): the
    # `EngineConfig.closed_orders_kept` most recently closed orders, oldest first; older ones are in the
    # engine's memory (processors.orders).
    closed: dict[str, int] = field(default_factory=dict)
    seq: int = 0  # ledger lines written for this user so far
    # Engine time until which the engine's memory may hold records this state let go: accepted inputs the
    # window let go (processors.engine), closed orders and fill ids (processors.orders). Before it, an id the
    # state does not know is looked up there; from then on there is nothing to find. MEMORY_UNKNOWN in a state
    # stored before version 9, when some or all of those were remembered there at once: the core sets it on the
    # user's next accepted input.
    memory_until: int = 0
    # No input in the window applied at a later engine time than this (MEMORY_UNKNOWN in a state stored before
    # version 8). Engine time is in order within one input topic only: the input that lets an entry go may come
    # from a topic read behind the others, so its time says nothing of the entry's, and this does.
    window_ms: int = 0
    # input topic -> offset of the latest record whose inputs this state includes (on the user's
    # partition). Stored with the state, so a stored state says exactly which inputs it holds: after a
    # crash that stored some of a step's states and not others, re-applying the step skips them here.
    through: dict[str, int] = field(default_factory=dict)

    def balance(self, account: str, asset: str) -> list[int]:
        """The live triple (created on first use)."""
        triple = self.balances.get((account, asset))
        if triple is None:
            triple = self.balances[(account, asset)] = [0, 0, 0]
        return triple

    def funded_accounts(self) -> set[str]:
        return {account for account, _ in self.balances}

    def parked_count(self) -> int:
        return sum(len(v) for v in self.parked.values())

    def available(self, account: str, asset: str) -> int:
        triple = self.balances.get((account, asset))
        return triple[AVAILABLE] if triple else 0

    def remember(self, key: str, entry: str, window: int) -> list[tuple[str, str]] | None:
        """Into the window; returns the entries it lets go to stay within `window`, oldest first (None: none)."""
        applied = self.applied
        applied[key] = entry
        if len(applied) <= window:
            return None
        return self.let_go(len(applied) - window)

    def let_go(self, count: int) -> list[tuple[str, str]]:
        """The `count` oldest window entries, out of the window."""
        assert 0 <= count <= len(self.applied)
        out = []
        for _ in range(count):
            oldest = next(iter(self.applied))
            out.append((oldest, self.applied.pop(oldest)))
        return out

    def prune_withdrawals(self, keep_closed: int) -> None:
        """Finished withdrawals are history (the ledger keeps it); keep the newest few for duplicate ids."""
        closed = [wid for wid, w in self.withdrawals.items() if w.status not in OPEN_WITHDRAWAL]
        for wid in closed[: max(0, len(closed) - keep_closed)]:
            del self.withdrawals[wid]

    def check(self) -> None:
        """Invariants that hold between any two inputs (DESIGN §2.3); cheap enough for tests."""
        for key, (available, frozen, borrowed) in self.balances.items():
            assert available >= 0 and frozen >= 0 and borrowed >= 0, f"{self.user_id} {key} negative"
            assert available or frozen or borrowed, f"{self.user_id} {key}: an empty balance is dropped, not kept"
        held: dict[tuple[str, str], int] = {}
        for hold in self.holds.values():
            held[(hold.account, hold.asset)] = held.get((hold.account, hold.asset), 0) + hold.remaining
        for w in self.withdrawals.values():
            if w.status in OPEN_WITHDRAWAL:
                held[(w.account, w.asset)] = held.get((w.account, w.asset), 0) + w.frozen
        for account, liquidation in self.liquidations.items():
            assert (liquidation.due_ms == 0) == bool(liquidation.orders), f"{self.user_id} {account}: a part is open"
            for order in liquidation.orders.values():
                held[(account, order.sell)] = held.get((account, order.sell), 0) + order.remaining
        for key, triple in self.balances.items():
            assert triple[FROZEN] == held.get(key, 0), f"{self.user_id} {key}: frozen != open holds"
        for key in self.loans:
            # (a debt without a loan is a reverted deposit's shortfall: processors.deposits)
            assert self.balances.get(key, (0, 0, 0))[BORROWED] > 0, f"{self.user_id} {key}: a loan without principal"

    # -- serialization -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "v": STATE_VERSION,
            "user": self.user_id,
            "opened": self.opened,
            "kyc": self.kyc_tier,
            "region": self.region,
            "status": self.status,
            "seq": self.seq,
            "balances": [[a, s, *t] for (a, s), t in self.balances.items()],
            "holds": {k: [h.account, h.asset, h.remaining, h.fills] for k, h in self.holds.items()},
            "withdrawals": {
                k: [w.account, w.chain, w.asset, w.amount, w.fee, w.address, w.status,
                    w.required_approvals, w.approvals, w.tx_hash]
                for k, w in self.withdrawals.items()
            },
            "parked": self.parked,
            "through": self.through,
            "mu": self.memory_until,
            "wm": self.window_ms,
            "closed": self.closed,
            "applied": self.applied,
        }
        if self.bands:
            doc["bands"] = self.bands
        if self.loans:
            doc["loans"] = [[a, s, loan.interest, loan.index] for (a, s), loan in self.loans.items()]
        if self.liquidations:
            doc["liq"] = {a: [q.id, q.part, q.due_ms, {k: [o.sell, o.buy, o.remaining, o.fills]
                                                       for k, o in q.orders.items()}]
                          for a, q in self.liquidations.items()}
        if self.legacy_deposits:
            doc["deposits"] = {k: [d.asset, d.amount, d.account, d.status] for k, d in self.legacy_deposits.items()}
        return to_json(doc)

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        doc = json.loads(data)
        version = doc["v"]
        assert version in READS_VERSIONS, f"state version {version} is not one this release reads"
        user = doc["user"]
        window = doc["applied"]
        applied: dict[str, str]
        if version >= 9 and isinstance(window, dict):
            applied = window  # input key -> entry text, in order (a list: written by this session's first v9 commits)
        elif version >= 7:
            keys = doc["keys"]
            entries: list[Accepted] = [tuple(entry) for entry in window]
            assert all(len(entry) == 6 for entry in entries), "a window entry has six fields"
            applied = {k: _text(e) for k, e in zip(keys, entries, strict=True)}
        else:
            # whole results, then (from version 6) the body's digest; "" before: the digest is in the memory record
            results = [Result(*r[:8]) for r in window]
            # before version 5 the window was keyed by the input id alone, which was a user's or the chain's
            keys = doc["keys"] if version >= 5 else [_legacy_key(r) for r in results]
            # Older windows also held refusals, which are no longer remembered: dropped, so a refused input sent
            # again applies once it can.
            entries, kept = [], []
            for k, r, raw in zip(keys, results, window, strict=True):
                if r.status == "ACCEPTED":
                    kept.append(k)
                    digest = raw[8] if version >= 6 else ""
                    entries.append((r.ts_ms, r.kind, r.reason, r.detail, r.ledger_lines, digest))
            applied = {k: _text(e) for k, e in zip(kept, entries, strict=True)}
        parked = doc["parked"]
        if version < 5:
            parked = {wid: [[*entry, 0] for entry in entries] for wid, entries in parked.items()}
        return cls(
            user_id=user,
            opened=doc["opened"],
            kyc_tier=doc["kyc"],
            region=doc["region"],
            status=doc["status"],
            seq=doc["seq"],
            balances={(a, s): [av, fr, bo] for a, s, av, fr, bo in doc["balances"]},
            holds={k: Hold(*v) for k, v in doc["holds"].items()},
            withdrawals={k: Withdrawal(*v) for k, v in doc["withdrawals"].items()},
            loans={(a, s): Loan(interest, index) for a, s, interest, index in doc.get("loans", ())},
            bands=doc.get("bands", {}),
            liquidations={a: Liquidation(i, part, due, {k: SellOrder(*o) for k, o in orders.items()})
                          for a, (i, part, due, orders) in doc.get("liq", {}).items()},
            legacy_deposits={k: Deposit(*v) for k, v in doc.get("deposits", {}).items()},
            parked=parked,
            through=doc.get("through", {}),
            closed=doc.get("closed", {}),
            # before version 9 closed orders and fill ids went to the memory as they came, past `mu`
            memory_until=doc["mu"] if version >= 9 else MEMORY_UNKNOWN,
            window_ms=doc["wm"] if version >= 8 else MEMORY_UNKNOWN,
            applied=applied,
        )


def _text(entry: Accepted) -> str:
    ts_ms, kind, reason, detail, count, digest = entry
    return entry_text(ts_ms, kind, reason, count, digest, detail)


def _legacy_key(result: Result) -> str:
    from processors.inputs import source_of  # here: the registry imports the handlers, which import this module

    return input_key(source_of(result.kind), result.id)


def input_key(source: str, input_id: str) -> str:
    """What deduplication keys on: an id is unique within its source only (processors.inputs)."""
    return f"{source}/{input_id}"
