"""The core's inputs and outputs: plain typed values, no I/O. The shell maps them to and from Avro."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, NamedTuple

from processors import bodies

# Where inputs come from (processors.inputs declares which kinds each source sends).
USER: Final = "user"
CHAIN: Final = "chain"
OPERATOR: Final = "operator"
SYSTEM: Final = "system"
SOURCES: Final = (USER, CHAIN, OPERATOR, SYSTEM)

Status = Literal["ACCEPTED", "REJECTED"]
Bucket = Literal["available", "frozen", "borrowed", "interest", "balance"]


class Command(NamedTuple):
    """One input for one user. `kind` is the Avro body type's short name; `body` its fields.

    `source` (processors.inputs) is where it came from: the shell sets it from the record's topic.
    Left empty by in-process callers (tests, benchmarks), it means the kind's own source.
    `ts_ms` is the client's clock, kept in the result as client time only; engine time is the context's.
    """

    id: str
    ts_ms: int
    user_id: str
    kind: str
    body: Mapping[str, Any]
    source: str = ""


# The inputs' bodies, one TypedDict per kind, are defined in processors.bodies, which is not compiled: mypyc
# keeps only a compiled TypedDict's own keys, without its bases or union types, and the registry's test
# and the sink read the fields off these types. The core and its callers name them from here.
AccountUnfreeze = bodies.AccountUnfreeze
Borrow = bodies.Borrow
BorrowRate = bodies.BorrowRate
ClockTick = bodies.ClockTick
DepositConfirmed = bodies.DepositConfirmed
DepositReverted = bodies.DepositReverted
DepositSeen = bodies.DepositSeen
FillSettle = bodies.FillSettle
Liquidate = bodies.Liquidate
LiquidationFill = bodies.LiquidationFill
LiquidationOrderClosed = bodies.LiquidationOrderClosed
MarkPrice = bodies.MarkPrice
OpenAccount = bodies.OpenAccount
OrderHold = bodies.OrderHold
OrderRelease = bodies.OrderRelease
Repay = bodies.Repay
Transfer = bodies.Transfer
WithdrawalApprove = bodies.WithdrawalApprove
WithdrawalBroadcast = bodies.WithdrawalBroadcast
WithdrawalCancel = bodies.WithdrawalCancel
WithdrawalConfirmed = bodies.WithdrawalConfirmed
WithdrawalFailed = bodies.WithdrawalFailed
WithdrawalRef = bodies.WithdrawalRef
WithdrawalRequest = bodies.WithdrawalRequest


class Value:
    """Equal, hashed and shown by value, its `fields()` in order: the core's outputs are plain classes, not
    NamedTuples. The core makes several per input, and compiled, a native class is built by one C call where a
    NamedTuple costs a tuple and a subtype copy (the core ran 8% faster with LedgerLine so, and 4.5% more with
    Result and Outcome, bench/core.py against the tree before, interleaved 3 times)."""

    __slots__ = ()

    def fields(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Value) and type(other) is type(self) and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(self.fields())

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.fields()!r}"

    def __reduce__(self) -> tuple[type[Value], tuple[Any, ...]]:
        """For copy and pickle: compiled, the class has no __dict__ to copy. `fields()` are the constructor's
        arguments, in order."""
        return type(self), self.fields()


class Result(Value):
    """An input's answer."""

    __slots__ = ("detail", "id", "kind", "ledger_lines", "reason", "status", "ts_ms", "user_id")

    id: str
    ts_ms: int  # the client's time, as the input carried it
    user_id: str
    kind: str
    status: Status
    reason: str | None
    detail: str
    ledger_lines: int

    def __init__(self, id: str, ts_ms: int, user_id: str, kind: str, status: Status, reason: str | None,
                 detail: str, ledger_lines: int) -> None:
        self.id = id
        self.ts_ms = ts_ms
        self.user_id = user_id
        self.kind = kind
        self.status = status
        self.reason = reason
        self.detail = detail
        self.ledger_lines = ledger_lines

    def fields(self) -> tuple[str, int, str, str, Status, str | None, str, int]:
        return (self.id, self.ts_ms, self.user_id, self.kind, self.status, self.reason, self.detail,
                self.ledger_lines)



class LedgerLine(Value):
    """One line; an entry's lines sum to zero per asset. `amount` is signed, in minor units.

    Sign convention: + adds to what the account holds. A user's `borrowed` bucket is a liability, so
    borrowing 10 is a line of -10 there and its ledger balance is -borrowed.
    """

    __slots__ = ("account", "amount", "asset", "balance_after", "balance_before", "bucket", "entry_id", "entry_type",
                 "line_no", "owner", "seq", "ts_ms", "user_id")

    owner: str  # the user whose input made the entry (the Kafka key of the line)
    ts_ms: int
    entry_id: str
    entry_type: str
    line_no: int
    user_id: str  # owner; "" for system accounts
    account: str  # sub-account, or sys:<name>
    bucket: Bucket
    asset: str
    amount: int
    balance_before: int | None  # None for system accounts: they span partitions
    balance_after: int | None
    seq: int  # per-user ledger sequence number

    def __init__(self, owner: str, ts_ms: int, entry_id: str, entry_type: str, line_no: int, user_id: str,
                 account: str, bucket: Bucket, asset: str, amount: int, balance_before: int | None,
                 balance_after: int | None, seq: int) -> None:
        self.owner = owner
        self.ts_ms = ts_ms
        self.entry_id = entry_id
        self.entry_type = entry_type
        self.line_no = line_no
        self.user_id = user_id
        self.account = account
        self.bucket = bucket
        self.asset = asset
        self.amount = amount
        self.balance_before = balance_before
        self.balance_after = balance_after
        self.seq = seq

    def fields(self) -> tuple[Any, ...]:
        return (self.owner, self.ts_ms, self.entry_id, self.entry_type, self.line_no, self.user_id, self.account,
                self.bucket, self.asset, self.amount, self.balance_before, self.balance_after, self.seq)

    @property
    def id(self) -> str:
        """Deterministic from the input: the same input always yields the same line ids."""
        return f"{self.owner}/{self.entry_id}/{self.line_no}"


class WithdrawalToSign(NamedTuple):
    """An approved withdrawal, for the signer."""

    id: str  # the withdrawal id
    ts_ms: int
    user_id: str
    chain: str
    asset: str
    amount: int
    address: str


class MarginEvent(NamedTuple):
    """A margin account crossed a line of its tier (processors.monitor)."""

    id: str
    ts_ms: int
    user_id: str
    account: str
    kind: str  # MarginLevel, MarginCall
    band: str
    previous_band: str
    level: str
    tier: str
    # a liquidation's events (LiquidationStarted, LiquidationCompleted): what it did, and the debt the insurance
    # fund paid, valued up in minor units of the valuation asset
    detail: str = ""
    shortfall_value: int = 0


class LiquidationOrder(NamedTuple):
    """An order for the matching engine: sell `sell_amount` of `sell_asset` from a liquidated margin account
    for `buy_asset` (processors.liquidation). `mark_price`: units of buy_asset per unit of sell_asset at the
    mark prices the order was sized with."""

    id: str
    ts_ms: int
    user_id: str
    account: str
    sell_asset: str
    sell_amount: int
    buy_asset: str
    mark_price: str
    part: int


Event = WithdrawalToSign | MarginEvent | LiquidationOrder | Command


class Outcome(Value):
    """What one input produced: its result, its ledger lines, events for other services, and the final
    results of other inputs it decided (parked chain events given up: PARKED_EXPIRED)."""

    __slots__ = ("events", "lines", "more", "result")

    result: Result
    lines: tuple[LedgerLine, ...]
    events: tuple[Event, ...]
    more: tuple[Result, ...]

    def __init__(self, result: Result, lines: tuple[LedgerLine, ...] = (), events: tuple[Event, ...] = (),
                 more: tuple[Result, ...] = ()) -> None:
        self.result = result
        self.lines = lines
        self.events = events
        self.more = more

    def fields(self) -> tuple[Result, tuple[LedgerLine, ...], tuple[Event, ...], tuple[Result, ...]]:
        return (self.result, self.lines, self.events, self.more)
