"""Liquidation of a margin account: from the crossing of its liquidation line to its last debt paid.

1. **Crossing.** processors.monitor finds the account's level at or below its tier's liquidation line and sends
   a `Liquidate` input (source: system, id liq/<account>/<the user's ledger sequence>) into the user's own
   partition. One crossing sends one: the band is kept in the state, and only a change of band sends anything.
   A stale price values nothing, so it never sends one.
2. **Start** (`start`). Re-checked at the partition's prices at the input's engine time: refused
   NOT_LIQUIDATABLE if the level is back above the line, ALREADY_LIQUIDATING while one is under way (a second
   crossing's input, or a resend under another id). Then the account is locked (`UserState.liquidations`:
   no orders, loans, repayments, transfers or withdrawals from or into it: `checks.not_liquidating`), its
   order holds are released, its withdrawals awaiting approval are cancelled (their coins back to available),
   and its first part starts. No valuation counts the coins of an open withdrawal (processors.loans.leaving).
3. **A part** (`_part`). Interest is booked to now; each debt is paid from what the account holds of its own
   asset (interest first, then principal). The largest debt left (valued up) is the part's target: the
   account's other assets, largest value first, are sold for it, as much as the debt's value plus the
   clearance fee and `liquidation_slippage` at mark prices, and at most `liquidation_part_value` a part. The
   amounts are frozen and a `LiquidationOrder` per asset goes to the matching engine (topic liquidation-orders).
   Dust (worth less than a minor unit of the valuation asset) is not sold.
4. **Fills** (`fill`). A `LiquidationFill` from the matching engine pays the order's frozen coins into clearing
   and takes its proceeds from clearing: first the account's debt in that asset (interest, then principal),
   then the clearance fee (`liquidation_fee` of the proceeds, rounded up, at most what is left) to the
   insurance fund, the rest to the account. A fill id settles once per order; an order takes at most
   `liquidation_fills_max` fills. A `LiquidationOrderClosed` (`closed`) says the matching engine closed an order
   with a part unfilled (no liquidity within its limit): that part is unfrozen, and counts as filled for step 5.
5. **After a part**, once its last order is filled: no debt left, the liquidation is complete. Debt left and
   nothing left to sell: the insurance fund pays it (a shortfall: ledger lines from sys:insurance_fund, never
   a negative balance) and the liquidation is complete, unless a withdrawal from the account is with the signer
   (approved or broadcast): its coins may come back (WithdrawalFailed), so the fund waits for its end, looking
   again after each cooldown. Else the next part starts `liquidation_cooldown_ms`
   of engine time later, at the first system touch of the user from then (a price move: `resume`), at the
   prices then.

`LiquidationStarted` and `LiquidationCompleted` margin events report it, the latter with the shortfall's value.
"""

from __future__ import annotations

from typing import Final

from processors import checks, loans, orders, withdrawals
from processors.applied import Applied
from processors.context import Context
from processors.ledger import CLEARING, INSURANCE_FUND, LIQUIDATION, LIQUIDATION_FILL, Entry, entry_id
from processors.margin import (
    BAND_NAMES,
    HEALTHY,
    PRICE_ONE,
    amount_worth,
    band,
    cross_price,
    level_text,
    line_text,
    price_text,
    value_down,
    value_up,
)
from processors.margin import LIQUIDATION as LIQUIDATION_BAND
from processors.messages import (
    Command,
    Event,
    LedgerLine,
    Liquidate,
    LiquidationFill,
    LiquidationOrder,
    LiquidationOrderClosed,
    MarginEvent,
)
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import AVAILABLE, BORROWED, Liquidation, SellOrder, UserState

STARTED: Final = "LiquidationStarted"
COMPLETED: Final = "LiquidationCompleted"
_EVER: Final = 1 << 62  # a price of any age: what a shortfall is reported at when prices went stale


def request(state: UserState, account: str, now_ms: int) -> Command:
    """The `Liquidate` input for an account that just crossed its liquidation line: into the user's partition.
    Its id is fixed by the state at the crossing, so an input re-applied after a crash asks again under the
    same id, which applies once."""
    body: Liquidate = {"account": account}
    return Command(f"liq/{account}/{state.seq}", now_ms, state.user_id, "Liquidate", body, "system")


def start(state: UserState, cmd: Command, ctx: Context) -> Applied:
    body: Liquidate = cmd.body  # type: ignore[assignment]
    account = body["account"]
    tier = ctx.cfg.margin_tier(account)
    if tier is None:
        raise Rejected(Reason.NOT_A_MARGIN_ACCOUNT, f"{account!r} is not a margin account")
    if account in state.liquidations:
        raise Rejected(Reason.ALREADY_LIQUIDATING, f"{account} is being liquidated ({state.liquidations[account].id})")
    assets, liabilities = loans.valued(state, ctx, account)  # every asset of the account priced, fresh
    if band(assets, liabilities, tier) != LIQUIDATION_BAND:
        raise Rejected(Reason.NOT_LIQUIDATABLE, f"margin level {level_text(assets, liabilities)} is above "
                                                f"{line_text(tier.liquidate_at)}, the {tier.name} liquidation line")
    entry = Entry(state, entry_id(cmd), LIQUIDATION, ctx.now_ms)
    released = 0
    for order_id in [k for k, hold in state.holds.items() if hold.account == account]:
        released += 1
        orders.cancel(entry, state, ctx, order_id)
    cancelled = withdrawals.cancel_pending(entry, state, ctx.cfg, account)
    liquidation = state.liquidations[account] = Liquidation(cmd.id, 0, 0)
    what = f"{released} orders released, {cancelled} withdrawals cancelled"
    started = MarginEvent(f"{state.user_id}/{account}/{cmd.id}/{STARTED}", ctx.now_ms, state.user_id, account,
                          STARTED, BAND_NAMES[LIQUIDATION_BAND], BAND_NAMES[state.bands.get(account, HEALTHY)],
                          level_text(assets, liabilities), tier.name, what)
    events = (started, *_part(entry, state, ctx, account, liquidation))
    detail = f"margin level {level_text(assets, liabilities)}; {what}"
    if not entry.posted:  # nothing to release, pay or sell yet: it waits for a withdrawal with the signer
        return Applied(events=events, detail=detail)
    entry.events = events
    return entry.applied(detail=detail)


def _open_order(state: UserState, order_id: str) -> tuple[str, Liquidation, SellOrder]:
    for account, liquidation in state.liquidations.items():
        order = liquidation.orders.get(order_id)
        if order is not None:
            return account, liquidation, order
    raise Rejected(Reason.UNKNOWN_LIQUIDATION_ORDER, f"no open liquidation order {order_id}: filled, closed, or "
                                                     "never placed")


def fill(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: LiquidationFill = cmd.body  # type: ignore[assignment]
    order_id = checks.order_key(cfg, "order_id", body["order_id"])
    account, liquidation, order = _open_order(state, order_id)
    fill_id = checks.order_key(cfg, "fill_id", body["fill_id"])
    if fill_id in order.fills:
        raise Rejected(Reason.FILL_SETTLED, f"fill {fill_id} was already settled on order {order_id}")
    pay = checks.amount(cfg, order.sell, body["pay_amount"])
    receive = checks.amount(cfg, order.buy, body["receive_amount"], allow_zero=True)
    if pay > order.remaining:
        raise Rejected(Reason.HOLD_EXCEEDED, f"fill pays {pay} > {order.remaining} left on the order")
    if pay < order.remaining and len(order.fills) + 1 >= cfg.liquidation_fills_max:
        raise Rejected(Reason.TOO_MANY_FILLS, f"order {order_id} took {len(order.fills)} fills: fill the rest at "
                                              "once")
    index = loans.market_of(ctx).index_at(order.buy, ctx.now_ms)
    entry = Entry(state, entry_id(cmd), LIQUIDATION_FILL, ctx.now_ms)
    entry.user(account, order.sell, "frozen", -pay)
    entry.system(CLEARING, order.sell, pay)
    left = receive
    interest, principal = loans.owed(entry, state, account, order.buy, index)
    pay_interest = min(left, interest)
    pay_principal = min(left - pay_interest, principal)
    loans.pay_down(entry, state, account, order.buy, pay_interest, pay_principal, CLEARING)
    left -= pay_interest + pay_principal
    fee = min(left, -(-receive * cfg.liquidation_fee.numerator // cfg.liquidation_fee.denominator))
    if fee:
        entry.system(CLEARING, order.buy, -fee)
        entry.system(INSURANCE_FUND, order.buy, fee)
    left -= fee
    if left:
        entry.system(CLEARING, order.buy, -left)
        entry.user(account, order.buy, "available", left)
    order.remaining -= pay
    if order.remaining:
        order.fills.append(fill_id)
    else:
        del liquidation.orders[order_id]
    if not liquidation.orders:
        entry.events = _part_done(entry, state, ctx, account, liquidation)
    assert len(order.fills) < cfg.liquidation_fills_max
    return entry.applied(detail=f"paid {pay_interest} interest and {pay_principal} principal; fee {fee}; "
                                f"{left} to the account")


def closed(state: UserState, cmd: Command, ctx: Context) -> Applied:
    """The matching engine closed a liquidation order with part of it unfilled: the rest is unfrozen, and when it
    was the part's last order, the part is done (processors.liquidation step 5: the next part, sized again at
    the prices then, after the cooldown)."""
    body: LiquidationOrderClosed = cmd.body  # type: ignore[assignment]
    order_id = checks.order_key(ctx.cfg, "order_id", body["order_id"])
    reason = checks.ident(ctx.cfg, "reason", body["reason"])
    account, liquidation, order = _open_order(state, order_id)
    entry = Entry(state, entry_id(cmd), LIQUIDATION, ctx.now_ms)
    entry.user(account, order.sell, "frozen", -order.remaining)
    entry.user(account, order.sell, "available", order.remaining)
    del liquidation.orders[order_id]
    if not liquidation.orders:
        entry.events = _part_done(entry, state, ctx, account, liquidation)
    return entry.applied(detail=f"{order.remaining} of {order.sell} not sold ({reason}): back to the account")


def due(state: UserState, now_ms: int) -> bool:
    """Whether a liquidation of the user waits for its next part, and may start it at engine time `now_ms`."""
    return any(q.due_ms and now_ms >= q.due_ms for q in state.liquidations.values())


def resume(state: UserState, ctx: Context, cause: str) -> tuple[tuple[LedgerLine, ...], tuple[Event, ...]]:
    """A system touch of the user (`cause`: its id): each liquidation whose cooldown is over starts its next part,
    at the prices in force; one that cannot be valued (a price stale) waits for the next touch."""
    lines: tuple[LedgerLine, ...] = ()
    events: tuple[Event, ...] = ()
    for account in sorted(state.liquidations):
        liquidation = state.liquidations[account]
        if not liquidation.due_ms or ctx.now_ms < liquidation.due_ms:
            continue
        try:
            loans.valued(state, ctx, account)  # every asset priced, before any line
        except Rejected:
            continue
        entry = Entry(state, f"system/{cause}/{account}", LIQUIDATION, ctx.now_ms)
        events += _part(entry, state, ctx, account, liquidation)
        if entry.posted:  # a part that waits again (a withdrawal with the signer) may post nothing
            lines += entry.close()
    return lines, events


def _part(entry: Entry, state: UserState, ctx: Context, account: str,
          liquidation: Liquidation) -> tuple[Event, ...]:
    """The next part: debts paid from what the account holds of them, then orders for the largest debt left.
    Every asset of the account has a fresh price (the caller valued it)."""
    cfg = ctx.cfg
    liquidation.part += 1
    liquidation.due_ms = 0
    market, now, quote = loans.market_of(ctx), ctx.now_ms, loans.quote_scale(ctx)
    debts: dict[str, int] = {}
    for asset in _debt_assets(state, account):
        interest, principal = loans.owed(entry, state, account, asset, market.index_at(asset, now))
        have = state.balances.get((account, asset), (0, 0, 0))[AVAILABLE]
        pay_interest = min(have, interest)
        pay_principal = min(have - pay_interest, principal)
        loans.pay_down(entry, state, account, asset, pay_interest, pay_principal, None)
        if interest + principal > pay_interest + pay_principal:
            debts[asset] = interest + principal - pay_interest - pay_principal
    if not debts:
        return (_complete(state, ctx, account, liquidation, 0),)
    worth = {asset: value_up(owed, cfg.assets[asset].scale, loans.price_of(ctx, asset), quote)
             for asset, owed in debts.items()}
    target = max(sorted(worth), key=lambda asset: worth[asset])
    collateral = []
    for (name, asset), triple in state.balances.items():
        if name == account and triple[AVAILABLE] and asset not in debts:
            value = value_down(triple[AVAILABLE], cfg.assets[asset].scale, loans.price_of(ctx, asset), quote)
            if value:  # dust is not sold
                collateral.append((value, asset))
    if not collateral:
        if withdrawals.in_flight(state, account):
            # Not a shortfall yet: a withdrawal the signer holds may fail and bring its coins back. Covered now,
            # the fund would pay a debt the account can still pay; so wait, and look again after the cooldown.
            liquidation.part -= 1  # waiting is no part
            liquidation.due_ms = now + cfg.liquidation_cooldown_ms
            return ()
        return (_complete(state, ctx, account, liquidation, _cover(entry, state, ctx, account)),)
    extra = 1 + cfg.liquidation_fee + cfg.liquidation_slippage
    budget = min(cfg.liquidation_part_value, -(-worth[target] * extra.numerator // extra.denominator))
    target_price = loans.price_of(ctx, target)
    out: list[Event] = []
    for _, asset in sorted(collateral, key=lambda pair: (-pair[0], pair[1])):
        if budget <= 0:
            break
        price, scale = loans.price_of(ctx, asset), cfg.assets[asset].scale
        sell = min(state.balances[(account, asset)][AVAILABLE], amount_worth(budget, scale, price, quote))
        budget -= value_down(sell, scale, price, quote)
        entry.user(account, asset, "available", -sell)
        entry.user(account, asset, "frozen", sell)
        order_id = f"{liquidation.id}/{liquidation.part}/{asset}"
        liquidation.orders[order_id] = SellOrder(asset, target, sell)
        out.append(LiquidationOrder(order_id, now, state.user_id, account, asset, sell, target,
                                    price_text(cross_price(price, target_price)), liquidation.part))
    assert liquidation.orders, "a part with collateral places an order"
    return tuple(out)


def _part_done(entry: Entry, state: UserState, ctx: Context, account: str,
               liquidation: Liquidation) -> tuple[Event, ...]:
    """The part's last order filled: complete when no debt is left, or when nothing is left to sell (the fund pays
    the rest); else the next part after the cooldown."""
    if not _debt_assets(state, account):
        return (_complete(state, ctx, account, liquidation, 0),)
    if (not any(name == account and triple[AVAILABLE] for (name, _), triple in state.balances.items())
            and not withdrawals.in_flight(state, account)):
        return (_complete(state, ctx, account, liquidation, _cover(entry, state, ctx, account)),)
    liquidation.due_ms = ctx.now_ms + ctx.cfg.liquidation_cooldown_ms
    assert liquidation.due_ms > 0
    return ()


def _debt_assets(state: UserState, account: str) -> list[str]:
    """The assets the account owes (principal, or a loan's booked interest), in name order."""
    owing = {asset for (name, asset), triple in state.balances.items() if name == account and triple[BORROWED]}
    owing |= {asset for name, asset in state.loans if name == account}
    return sorted(owing)


def _cover(entry: Entry, state: UserState, ctx: Context, account: str) -> int:
    """The insurance fund pays every debt left (a shortfall: the account has nothing left to sell); returns its
    value, valued up at the latest prices known (the report's figure, even if stale)."""
    market, now, quote = loans.market_of(ctx), ctx.now_ms, loans.quote_scale(ctx)
    shortfall = 0
    for asset in _debt_assets(state, account):
        interest, principal = loans.owed(entry, state, account, asset, market.index_at(asset, now))
        loans.pay_down(entry, state, account, asset, interest, principal, INSURANCE_FUND)
        price = (PRICE_ONE if asset == ctx.cfg.valuation_asset else market.price(asset, now, _EVER))
        if price is not None:
            shortfall += value_up(interest + principal, ctx.cfg.assets[asset].scale, price, quote)
    assert not _debt_assets(state, account), "the fund paid every debt"
    return shortfall


def _complete(state: UserState, ctx: Context, account: str, liquidation: Liquidation, shortfall: int) -> MarginEvent:
    """No debt left: the account is unlocked and healthy again."""
    assert not _debt_assets(state, account) and not liquidation.orders
    del state.liquidations[account]
    state.bands.pop(account, None)
    tier = ctx.cfg.margin_tier(account)
    return MarginEvent(f"{state.user_id}/{account}/{liquidation.id}/{COMPLETED}", ctx.now_ms, state.user_id, account,
                       COMPLETED, BAND_NAMES[HEALTHY], BAND_NAMES[LIQUIDATION_BAND], "inf",
                       tier.name if tier is not None else "", f"{liquidation.part} parts", shortfall)
