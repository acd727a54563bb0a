"""The bodies of the inputs: one TypedDict per kind, named as the kind, with the fields of its Avro schema
in order (schemas/posflow.<Kind>.avsc; tests/unit/test_inputs.py holds them to it). Amounts are decimal
text. processors.inputs registers each with its kind; `processors.inputs.command` builds an input from one.

Not compiled with the core (processors.CORE_MODULES): a TypedDict compiled by mypyc keeps only its own
keys, without its bases or union types, and the registry's test and the sink read the fields off these
types. At run time a body is a plain dict either way. Import them from processors.messages.
"""

from __future__ import annotations

from typing import TypedDict


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


class Borrow(TypedDict):
    """A loan from the asset's lending pool into a margin account (processors.loans)."""

    account: str
    asset: str
    amount: str


class Repay(Borrow):
    """Pays a margin account's loan: interest first, then principal; at most what is owed."""


class Liquidate(TypedDict):
    """The system's decision to liquidate a margin account that crossed its liquidation line
    (processors.monitor sends it into the user's own partition; processors.liquidation applies it)."""

    account: str


class LiquidationFill(TypedDict):
    """The matching engine's fill of a liquidation order (processors.liquidation): what the order paid of the
    asset it sells and received of the asset it buys. Sent on the matching engine's topic, marked as a
    liquidation fill by its kind: no trading fee (the clearance fee is the engine's)."""

    fill_id: str
    order_id: str
    pay_amount: str
    receive_amount: str


class LiquidationOrderClosed(TypedDict):
    """The matching engine closed a liquidation order with `remaining` unfilled (processors.liquidation): what was
    not sold is unfrozen, and the liquidation goes on with its next part after the cooldown."""

    order_id: str
    reason: str


class MarkPrice(TypedDict):
    """A mark price for one partition's users (processors.market): units of the valuation asset per whole unit
    of `asset`, priced at broker time `priced_ms` on the prices topic."""

    partition: int
    asset: str
    price: str
    priced_ms: int


class BorrowRate(TypedDict):
    """An asset's lending pool, exchange-wide, for one partition: its utilization sets the hourly rate."""

    partition: int
    asset: str
    borrowed: str
    supplied: str


class WithdrawalRef(TypedDict):
    """What the kinds below have in common: the withdrawal they name (all the handlers read of most)."""

    withdrawal_id: str


class WithdrawalCancel(WithdrawalRef):
    reason: str


class WithdrawalBroadcast(WithdrawalRef):
    tx_hash: str


class WithdrawalConfirmed(WithdrawalRef):
    tx_hash: str


class WithdrawalFailed(WithdrawalRef):
    reason: str
