"""The core's inputs and outputs: plain typed values, no I/O. The shell maps them to and from Avro."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, TypedDict, TypeVar

Status = Literal["ACCEPTED", "REJECTED"]
Bucket = Literal["available", "frozen", "borrowed", "balance"]


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


# The bodies, as the Avro schemas define them (schemas/posflow.<Kind>.avsc). Amounts are decimal text.
class OpenAccount(TypedDict):
    kyc_tier: int
    region: str


class DepositSeen(TypedDict):
    chain: str
    tx_hash: str
    log_index: int
    address: str
    asset: str
    amount: str
    block_number: int


class DepositConfirmed(DepositSeen):
    account: str


class DepositReverted(TypedDict):
    deposit_id: str
    reason: str


class OrderHold(TypedDict):
    order_id: str
    account: str
    asset: str
    amount: str


class OrderRelease(TypedDict):
    order_id: str
    amount: str | None


class FillSettle(TypedDict):
    fill_id: str
    order_id: str
    account: str
    pay_asset: str
    pay_amount: str
    receive_asset: str
    receive_amount: str
    fee_amount: str


class Transfer(TypedDict):
    asset: str
    amount: str
    from_account: str
    to_account: str


class WithdrawalRequest(TypedDict):
    withdrawal_id: str
    account: str
    chain: str
    asset: str
    amount: str
    fee: str
    address: str


class WithdrawalApprove(TypedDict):
    withdrawal_id: str
    approver: str


class AccountUnfreeze(TypedDict):
    """An operator lifts a risk freeze: ledger-neutral, audited by its result (approver and reason)."""

    approver: str
    reason: str


class ClockTick(TypedDict):
    """Engine time passing on one partition (its record's broker timestamp): the step sweeps what expired."""

    partition: int


class WithdrawalRef(TypedDict):
    """WithdrawalCancel / WithdrawalBroadcast / WithdrawalConfirmed / WithdrawalFailed share this."""

    withdrawal_id: str


# Outputs are NamedTuples: immutable like frozen dataclasses, but several times cheaper to build,
# which matters at hundreds of thousands of lines per second.
_T = TypeVar("_T", bound=tuple[Any, ...])


def build(cls: type[_T], fields: tuple[Any, ...]) -> _T:
    """cls(*fields) for a NamedTuple on the hot path, without its generated __new__ (a Python-level
    function, a third of the cost). The caller passes every field, in order: no defaults apply."""
    return tuple.__new__(cls, fields)


class Result(NamedTuple):
    id: str
    ts_ms: int
    user_id: str
    kind: str
    status: Status
    reason: str | None
    detail: str
    ledger_lines: int


class LedgerLine(NamedTuple):
    """One line; an entry's lines sum to zero per asset. `amount` is signed, in minor units.

    Sign convention: + adds to what the account holds. A user's `borrowed` bucket is a liability, so
    borrowing 10 is a line of -10 there and its ledger balance is -borrowed.
    """

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


Event = WithdrawalToSign


class Outcome(NamedTuple):
    result: Result
    lines: tuple[LedgerLine, ...] = ()
    events: tuple[Event, ...] = ()
    # final results of other inputs this one decided: parked chain events given up (PARKED_EXPIRED)
    more: tuple[Result, ...] = ()
