"""Margin monitoring: each margin account's band of margin level (processors.margin.band), kept in the state,
and an event each time the band changes.

An account is re-valued after every input accepted for an indebted user, and on the user's system touches
(processors.engine.tick: a price move, a pool's new rate, a due clock tick). A change of band is a
`MarginLevel` event; entering the margin-call band from above it, also a `MarginCall`. Both carry the input
that made the crossing, so one crossing is one event, however often the input is re-applied or resent. An
account that cannot be valued (a price missing or older than price_max_age_ms) keeps its band: a stale price
never moves an account into margin call or liquidation, nor out of it. Entering the liquidation band also sends a
`Liquidate` input into the user's own partition (processors.liquidation.request), and so does every valuation
that finds the account there until one applies; an account being liquidated
keeps its band until the liquidation completes, and is not re-valued meanwhile.
"""

from __future__ import annotations

from typing import Any

from processors import liquidation, loans
from processors.context import Context
from processors.margin import BAND_NAMES, HEALTHY, LIQUIDATION, MARGIN_CALL, band, level_text, line_text
from processors.messages import Event, MarginEvent
from processors.money import Rejected
from processors.state import UserState

MARGIN_LEVEL = "MarginLevel"
MARGIN_CALL_EVENT = "MarginCall"


def watched(state: UserState) -> bool:
    """Whether the user has a margin account to watch: one that owes, one whose band is not healthy, or one being
    liquidated."""
    return bool(state.loans or state.bands or state.liquidations)


def changes(state: UserState, ctx: Context) -> bool:
    """Whether `evaluate` would change a band (and send an event), or a liquidation may start its next part: pure,
    for choosing whom a price touches."""
    if state.liquidations and liquidation.due(state, ctx.now_ms):
        return True
    for account in _valued_accounts(state):
        tier = ctx.cfg.margin_tier(account)
        if tier is None:
            continue
        try:
            assets, liabilities = loans.valued(state, ctx, account)
        except Rejected:
            continue
        new = band(assets, liabilities, tier)
        if new != state.bands.get(account, HEALTHY) or new == LIQUIDATION:
            return True
    return False


def _valued_accounts(state: UserState) -> set[str]:
    """The margin accounts whose band follows their level: those that owe or have a band, but not those being
    liquidated (their band is liquidation until it completes)."""
    accounts = {account for account, _ in state.loans} | set(state.bands)
    return accounts - set(state.liquidations) if state.liquidations else accounts


def evaluate(state: UserState, ctx: Context, cause: str) -> tuple[Event, ...]:
    """Re-value the user's margin accounts; the events of those whose band changed, and a `Liquidate` input for
    each that entered the liquidation band. `cause` names the input (its source and id, or the system record's
    position) whose application this follows."""
    out: list[Event] = []
    for account in sorted(_valued_accounts(state)):
        tier = ctx.cfg.margin_tier(account)
        if tier is None:
            continue  # an isolated market no longer configured: its loans are still repaid, not watched
        try:
            assets, liabilities = loans.valued(state, ctx, account)
        except Rejected:
            continue  # not valued: the band stays
        new = band(assets, liabilities, tier)
        old = state.bands.get(account, HEALTHY)
        if new == LIQUIDATION:
            # Asked again at each valuation until one applies: a `Liquidate` refused (its price stale by the time
            # it applied) changes nothing, and the band alone would never ask again. Under one id while the
            # state does not change, so copies in flight apply once; the first applied locks the account.
            out.append(liquidation.request(state, account, ctx.now_ms))
        if new == old:
            continue
        if new == HEALTHY:
            del state.bands[account]
        else:
            state.bands[account] = new
        level = level_text(assets, liabilities)
        kinds = [MARGIN_LEVEL] + ([MARGIN_CALL_EVENT] if new >= MARGIN_CALL > old else [])
        for kind in kinds:
            out.append(MarginEvent(f"{state.user_id}/{account}/{cause}/{kind}/{BAND_NAMES[new]}", ctx.now_ms,
                                   state.user_id, account, kind, BAND_NAMES[new], BAND_NAMES[old], level, tier.name))
    return tuple(out)


def view(state: UserState, ctx: Context) -> list[dict[str, Any]]:
    """Each margin account that owes or has a band, as the margin view shows it at engine time ctx.now_ms:
    its tier and lines, band, level (or why there is none), and its loans with interest booked and accrued
    since. Amounts in minor units; the caller formats them."""
    rows: list[dict[str, Any]] = []
    for account in sorted({account for account, _ in state.loans} | set(state.bands) | set(state.liquidations)):
        tier = ctx.cfg.margin_tier(account)
        row: dict[str, Any] = {"account": account, "tier": tier.name if tier else "",
                                  "band": BAND_NAMES[state.bands.get(account, HEALTHY)],
                                  "status": "liquidating" if account in state.liquidations else "normal"}
        under_way = state.liquidations.get(account)
        if under_way is not None:
            row["liquidation"] = {"id": under_way.id, "part": under_way.part, "next_part_ms": under_way.due_ms,
                                  "orders": {k: {"sell": o.sell, "buy": o.buy, "remaining": o.remaining}
                                             for k, o in under_way.orders.items()}}
        if tier is not None:
            row["lines"] = {"transfer_out_above": line_text(tier.transfer_out_above),
                            "borrow_above": line_text(tier.borrow_above), "call_at": line_text(tier.call_at),
                            "liquidate_at": line_text(tier.liquidate_at)}
        try:
            assets, liabilities = loans.valued(state, ctx, account)
            row.update(level=level_text(assets, liabilities), assets=assets, liabilities=liabilities)
        except Rejected as refused:
            row.update(level="", why=refused.detail)
        row["loans"] = [
            {"asset": asset, "principal": state.balances[(name, asset)][2], "interest_booked": loan.interest,
             "interest_since": loans.accrued(state, ctx, name, asset)}
            for (name, asset), loan in sorted(state.loans.items()) if name == account
        ]
        rows.append(row)
    return rows
