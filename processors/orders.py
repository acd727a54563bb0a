"""Order holds, their release, and fill settlement against the per-asset clearing account."""

from __future__ import annotations

from processors import checks
from processors.applied import Applied
from processors.config import EngineConfig
from processors.ledger import Entry
from processors.messages import Command, FillSettle, OrderHold, OrderRelease
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import Hold, UserState


def hold(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: OrderHold = cmd.body  # type: ignore[assignment]
    order_id = checks.present("order_id", body["order_id"])
    if order_id in state.holds:
        raise Rejected(Reason.DUPLICATE_ORDER_ID, f"order {order_id} already holds funds")
    asset = checks.asset(cfg, body["asset"]).symbol
    account = checks.account(cfg, body["account"], asset)
    amount = checks.amount(cfg, asset, body["amount"])
    checks.funds(state, account, asset, amount)
    entry = Entry(state, cmd.id, "ORDER_HOLD", cmd.ts_ms)
    entry.user(account, asset, "available", -amount)
    entry.user(account, asset, "frozen", amount)
    state.holds[order_id] = Hold(account, asset, amount)
    return Applied(entry.close())


def _open_hold(state: UserState, order_id: str) -> Hold:
    found = state.holds.get(order_id)
    if found is None:
        raise Rejected(Reason.UNKNOWN_HOLD, f"order {order_id} holds nothing (never placed, filled or released)")
    return found


def _reduce(state: UserState, order_id: str, held: Hold, amount: int) -> None:
    held.remaining -= amount
    if held.remaining == 0:
        del state.holds[order_id]


def release(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: OrderRelease = cmd.body  # type: ignore[assignment]
    held = _open_hold(state, body["order_id"])
    text = body.get("amount")
    amount = held.remaining if text is None else checks.amount(cfg, held.asset, text)
    if amount > held.remaining:
        raise Rejected(Reason.HOLD_EXCEEDED, f"release {amount} > {held.remaining} left on the hold")
    entry = Entry(state, cmd.id, "ORDER_RELEASE", cmd.ts_ms)
    entry.user(held.account, held.asset, "frozen", -amount)
    entry.user(held.account, held.asset, "available", amount)
    _reduce(state, body["order_id"], held, amount)
    return Applied(entry.close())


def fill(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    """One side of a trade: pay from the hold into clearing, receive from clearing, fee to revenue."""
    body: FillSettle = cmd.body  # type: ignore[assignment]
    held = _open_hold(state, body["order_id"])
    if (held.account, held.asset) != (body["account"], body["pay_asset"]):
        raise Rejected(
            Reason.ASSET_MISMATCH,
            f"order holds {held.asset} in {held.account}, fill pays {body['pay_asset']} from {body['account']}",
        )
    receive_asset = checks.asset(cfg, body["receive_asset"]).symbol
    if receive_asset == held.asset:
        raise Rejected(Reason.ASSET_MISMATCH, "a fill pays one asset and receives another")
    checks.account(cfg, held.account, receive_asset)
    pay = checks.amount(cfg, held.asset, body["pay_amount"])
    receive = checks.amount(cfg, receive_asset, body["receive_amount"])
    fee = checks.amount(cfg, receive_asset, body["fee_amount"], allow_zero=True)
    if pay > held.remaining:
        raise Rejected(Reason.HOLD_EXCEEDED, f"fill pays {pay} > {held.remaining} left on the hold")
    if fee > receive:
        raise Rejected(Reason.BAD_FEE, f"fee {fee} exceeds the {receive} received")
    entry = Entry(state, cmd.id, "FILL", cmd.ts_ms)
    entry.user(held.account, held.asset, "frozen", -pay)
    entry.system("clearing", held.asset, pay)
    entry.system("clearing", receive_asset, -receive)
    if receive > fee:
        entry.user(held.account, receive_asset, "available", receive - fee)
    if fee:
        entry.system("fee_revenue", receive_asset, fee)
    _reduce(state, body["order_id"], held, pay)
    return Applied(entry.close())
