"""Order holds, their release, and fill settlement against the per-asset clearing account.

Business keys, once: an order id holds funds once (DUPLICATE_ORDER_ID while open, and for the dedup horizon
after it closed), and a fill id settles once per order (FILL_SETTLED while it is among the open order's last
fills, and for the dedup horizon after the order let go of it; once the order closed, every fill on it is
ORDER_CLOSED). The state keeps what is recent: the last `closed_orders_kept` closed orders
(`UserState.closed`) and each open order's last `fills_per_hold` fill ids (`Hold.fills`); older ones are let
go to the engine's memory (`o/<order>`, `fill/<length>/<order>/<fill>`) and looked up there only while the state's
`memory_until` says it let go of any (processors.context).
"""

from __future__ import annotations

from processors import checks
from processors.applied import Applied
from processors.context import Context
from processors.ledger import CLEARING, FEE_REVENUE, FILL, ORDER_HOLD, ORDER_RELEASE, Entry, entry_id
from processors.messages import Command, FillSettle, OrderHold, OrderRelease
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import Hold, UserState


def hold(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: OrderHold = cmd.body  # type: ignore[assignment]
    order_id = checks.order_key(cfg, "order_id", body["order_id"])
    if order_id in state.holds:
        raise Rejected(Reason.DUPLICATE_ORDER_ID, f"order {order_id} already holds funds")
    if _was_closed(state, ctx, order_id):
        raise Rejected(Reason.DUPLICATE_ORDER_ID, f"order id {order_id} was used by an order that closed")
    if len(state.holds) >= cfg.open_holds_max:
        raise Rejected(Reason.TOO_MANY_OPEN_HOLDS, f"{cfg.open_holds_max} orders hold funds; cancel some first")
    asset = checks.asset(cfg, body["asset"]).symbol
    account = checks.account(cfg, body["account"], asset)
    amount = checks.amount(cfg, asset, body["amount"])
    checks.not_liquidating(state, account)
    checks.funds(state, account, asset, amount)
    entry = Entry(state, entry_id(cmd), ORDER_HOLD, ctx.now_ms)
    entry.user(account, asset, "available", -amount)
    entry.user(account, asset, "frozen", amount)
    state.holds[order_id] = Hold(account, asset, amount)
    return entry.applied()


def _closed(order_id: str) -> str:
    """Memory key of a closed order the state let go: its id is used, and it takes no fill."""
    return f"o/{order_id}"


def _fill_key(order_id: str, fill_id: str) -> str:
    """Memory key of a fill id an open order let go. The order id's length first: ids may hold "/", and order
    "a/b" with fill "c" is not order "a" with fill "b/c"."""
    return f"fill/{len(order_id)}/{order_id}/{fill_id}"


def _fill_let_go(state: UserState, ctx: Context, order_id: str, fill_id: str) -> bool:
    if ctx.recall_let_go(state, _fill_key(order_id, fill_id)) is not None:
        return True
    # Releases before state version 9 remembered every fill for a horizon as f/<order>/<fill> (ambiguous, see
    # above). A state they stored loads with memory_until unknown, and its first let-go covers two horizons:
    # looked up while those records can live. Drop once every deployment ran version 9 for a horizon.
    return ctx.recall_let_go(state, f"f/{order_id}/{fill_id}") is not None


def _was_closed(state: UserState, ctx: Context, order_id: str) -> bool:
    """Closed within the dedup horizon: in the state's recent closed orders, or let go to the memory."""
    until = state.closed.get(order_id)
    if until is not None:
        return ctx.now_ms < until
    return ctx.recall_let_go(state, _closed(order_id)) is not None


def _open_hold(state: UserState, ctx: Context, order_id: str) -> Hold:
    found = state.holds.get(order_id)
    if found is None:
        if _was_closed(state, ctx, order_id):
            raise Rejected(Reason.ORDER_CLOSED, f"order {order_id} was filled or released: it holds nothing")
        raise Rejected(Reason.UNKNOWN_HOLD, f"order {order_id} holds nothing (never placed)")
    return found


def _reduce(state: UserState, ctx: Context, order_id: str, held: Hold, amount: int) -> None:
    held.remaining -= amount
    if held.remaining == 0:
        del state.holds[order_id]  # its fill ids go with it: every later fill on it is ORDER_CLOSED
        closed = state.closed
        closed.pop(order_id, None)  # an entry past its horizon: the id was used again; now last in order
        closed[order_id] = ctx.horizon()
        while len(closed) > ctx.cfg.closed_orders_kept:
            oldest = next(iter(closed))
            until = closed.pop(oldest)
            if until > ctx.now_ms:
                ctx.let_go(state, _closed(oldest), 1, until)
        assert len(closed) <= ctx.cfg.closed_orders_kept


def cancel(entry: Entry, state: UserState, ctx: Context, order_id: str) -> None:
    """Release all an open order holds and close it, within `entry` (a liquidation's start: processors.liquidation).
    Its later fills are ORDER_CLOSED, as a released order's."""
    held = state.holds[order_id]
    entry.user(held.account, held.asset, "frozen", -held.remaining)
    entry.user(held.account, held.asset, "available", held.remaining)
    _reduce(state, ctx, order_id, held, held.remaining)


def release(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: OrderRelease = cmd.body  # type: ignore[assignment]
    held = _open_hold(state, ctx, body["order_id"])
    text = body.get("amount")
    amount = held.remaining if text is None else checks.amount(cfg, held.asset, text)
    if amount > held.remaining:
        raise Rejected(Reason.HOLD_EXCEEDED, f"release {amount} > {held.remaining} left on the hold")
    entry = Entry(state, entry_id(cmd), ORDER_RELEASE, ctx.now_ms)
    entry.user(held.account, held.asset, "frozen", -amount)
    entry.user(held.account, held.asset, "available", amount)
    _reduce(state, ctx, body["order_id"], held, amount)
    return entry.applied()


def fill(state: UserState, cmd: Command, ctx: Context) -> Applied:
    """One side of a trade: pay from the hold into clearing, receive from clearing, fee to revenue."""
    cfg = ctx.cfg
    body: FillSettle = cmd.body  # type: ignore[assignment]
    held = _open_hold(state, ctx, body["order_id"])
    # A fill id settles once per order side, however many inputs come between (matching engines replay
    # fills after a restart, under new input ids too): in the hold while among its last fills, then in the
    # memory for a horizon (the span of every resend, as for input ids).
    fill_id = checks.order_key(cfg, "fill_id", body["fill_id"])
    if fill_id in held.fills or _fill_let_go(state, ctx, body["order_id"], fill_id):
        raise Rejected(Reason.FILL_SETTLED, f"fill {fill_id} was already settled on order {body['order_id']}")
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
    entry = Entry(state, entry_id(cmd), FILL, ctx.now_ms)
    entry.user(held.account, held.asset, "frozen", -pay)
    entry.system(CLEARING, held.asset, pay)
    entry.system(CLEARING, receive_asset, -receive)
    if receive > fee:
        entry.user(held.account, receive_asset, "available", receive - fee)
    if fee:
        entry.system(FEE_REVENUE, receive_asset, fee)
    _reduce(state, ctx, body["order_id"], held, pay)
    if held.remaining:
        held.fills.append(fill_id)
        while len(held.fills) > cfg.fills_per_hold:
            # until a horizon from now: a resend comes at most a horizon after the fill applied (the log keeps
            # it no longer), and fills come in order on one topic, so this one applied before now
            ctx.let_go(state, _fill_key(body["order_id"], held.fills.pop(0)), 1, ctx.horizon())
        assert len(held.fills) <= cfg.fills_per_hold
    return entry.applied()
