"""Margin loans: borrow from an asset's lending pool into a margin account, repay interest first, then
principal; and the check that keeps funds from leaving an indebted margin account below its transfer line.

A margin account is `margin` (cross: every asset in it backs every loan in it) or isolated:<BASE>-<QUOTE>
(that market's two assets only); its lines are its tier's (EngineConfig.margin_tier). Its margin level is
valued at the partition's mark prices (ctx.market), holdings down and debts up (processors.margin), and a
price older than EngineConfig.price_max_age_ms counts as none: the account is then not valued, and nothing
that needs its level is allowed.

Interest (processors.rates): a loan's principal is its balance's `borrowed` (with a reverted deposit's
shortfall, if one was booked in the same balance: a debt of the account, charged as the loan); its `Loan`
holds the interest booked and not paid, and the index reading through which it is booked. Interest is booked
when the loan is touched (a borrow or a repayment of it), up to the asset's index at that engine time; the
first hour of a new loan is booked as it is made. Each booking rounds up, so a loan touched often pays at most
a minor unit more per touch. Every check runs before the first line is posted: a refused input posts nothing.
"""

from __future__ import annotations

from processors import checks
from processors.applied import Applied
from processors.context import Context
from processors.ledger import BORROW, INTEREST_ACCRUED, LENDING_POOL, LOANS_RECEIVABLE, REPAY, Entry, entry_id
from processors.margin import PRICE_ONE, MarginTier, at_or_below, level_text, value_down, value_up
from processors.market import Market
from processors.messages import Borrow, Command, Repay
from processors.money import Rejected
from processors.rates import interest
from processors.reasons import Reason
from processors.state import BORROWED, OPEN_WITHDRAWAL, Loan, UserState


def borrow(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: Borrow = cmd.body  # type: ignore[assignment]
    asset = checks.asset(cfg, body["asset"]).symbol
    account, tier = _margin_account(ctx, body["account"], asset)
    checks.not_liquidating(state, account)
    market = market_of(ctx)
    rate = market.rates.get(asset)
    if asset not in cfg.rate_models or rate is None:
        raise Rejected(Reason.NO_LENDING_POOL, f"{asset} cannot be borrowed now: its pool has no rate yet")
    amount = checks.amount(cfg, asset, body["amount"])
    index = market.index_at(asset, ctx.now_ms)
    first_hour = interest(amount, 0, rate)
    assets, liabilities = valued(state, ctx, account)
    price, scale, quote = price_of(ctx, asset), cfg.assets[asset].scale, quote_scale(ctx)
    # The borrowed coins are the account's too; the new debt is the loan and its first hour.
    assets += value_down(amount, scale, price, quote)
    liabilities += value_up(amount + first_hour, scale, price, quote)
    ratio = tier.borrow_above
    if assets * ratio.denominator < ratio.numerator * liabilities:
        raise Rejected(Reason.MARGIN_LEVEL_TOO_LOW, f"margin level after the loan {level_text(assets, liabilities)} "
                                                    f"< {float(ratio):g}, the {tier.name} borrow line")
    entry = Entry(state, entry_id(cmd), BORROW, ctx.now_ms)
    loan = _booked(entry, state, account, asset, index)
    entry.user(account, asset, "available", amount)
    entry.system(LENDING_POOL, asset, -amount)
    entry.user(account, asset, "borrowed", -amount)
    entry.system(LOANS_RECEIVABLE, asset, amount)
    if first_hour:
        entry.interest(account, asset, -first_hour)
        entry.system(INTEREST_ACCRUED, asset, first_hour)
    assert loan.index >= index and state.balances[(account, asset)][BORROWED] > 0
    return entry.applied(detail=f"margin level {level_text(assets, liabilities)}; first hour {first_hour}")


def repay(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: Repay = cmd.body  # type: ignore[assignment]
    asset = checks.asset(cfg, body["asset"]).symbol
    account, _ = _margin_account(ctx, body["account"], asset)
    checks.not_liquidating(state, account)  # the liquidation pays the debts
    loan = state.loans.get((account, asset))
    if loan is None:
        raise Rejected(Reason.NOTHING_TO_REPAY, f"{account} owes no {asset}")
    amount = checks.amount(cfg, asset, body["amount"])
    index = market_of(ctx).index_at(asset, ctx.now_ms)
    principal = state.balances[(account, asset)][BORROWED]
    owed_interest = loan.interest + _since(loan, principal, index)
    pay = min(amount, owed_interest + principal)
    checks.funds(state, account, asset, pay)
    pay_interest = min(pay, owed_interest)
    pay_principal = pay - pay_interest
    entry = Entry(state, entry_id(cmd), REPAY, ctx.now_ms)
    _booked(entry, state, account, asset, index)
    pay_down(entry, state, account, asset, pay_interest, pay_principal, None)
    left = owed_interest + principal - pay
    assert loan.interest == owed_interest - pay_interest
    return entry.applied(detail=f"paid {pay_interest} interest and {pay_principal} principal; {left} owed")


def owed(entry: Entry, state: UserState, account: str, asset: str, index: int) -> tuple[int, int]:
    """(interest, principal) the account owes in `asset`, its interest booked up to `index` first (a debt
    without a loan is a reverted deposit's shortfall: principal only)."""
    principal = state.balances.get((account, asset), (0, 0, 0))[BORROWED]
    if (account, asset) not in state.loans:
        return 0, principal
    return _booked(entry, state, account, asset, index).interest, principal


def pay_down(entry: Entry, state: UserState, account: str, asset: str, pay_interest: int, pay_principal: int,
             payer: str | None) -> None:
    """Pay booked interest, then principal, of the account's debt in `asset`, from its available balance
    (`payer` None) or from a system account (a liquidation fill's proceeds in clearing, the insurance fund). A
    loan paid off is closed: interest is paid first, so nothing is left of either."""
    if pay_interest:
        _fund(entry, account, asset, pay_interest, payer)
        entry.interest(account, asset, pay_interest)
    if pay_principal:
        _fund(entry, account, asset, pay_principal, payer)
        entry.system(LENDING_POOL, asset, pay_principal)
        entry.user(account, asset, "borrowed", pay_principal)
        entry.system(LOANS_RECEIVABLE, asset, -pay_principal)
    loan = state.loans.get((account, asset))
    if loan is not None and not loan.interest and not state.balances.get((account, asset), (0, 0, 0))[BORROWED]:
        del state.loans[(account, asset)]


def _fund(entry: Entry, account: str, asset: str, amount: int, payer: str | None) -> None:
    if payer is None:
        entry.user(account, asset, "available", -amount)
    else:
        entry.system(payer, asset, -amount)


def check_out(state: UserState, ctx: Context, account: str, asset: str, amount: int) -> None:
    """`amount` of `asset` may leave `account` (a transfer, a withdrawal): refused when the account owes and
    would be left at or below its tier's transfer-out line, or cannot be valued."""
    tier = ctx.cfg.margin_tier(account)
    if tier is None or not any(key[0] == account for key in state.loans):
        return
    assets, liabilities = valued(state, ctx, account)
    assets -= value_up(amount, ctx.cfg.assets[asset].scale, price_of(ctx, asset), quote_scale(ctx))
    if assets < 0 or at_or_below(assets, liabilities, tier.transfer_out_above):
        raise Rejected(Reason.MARGIN_LEVEL_TOO_LOW, f"{account} owes: it must keep a margin level above "
                                                    f"{float(tier.transfer_out_above):g} ({tier.name})")


def _margin_account(ctx: Context, name: str, asset: str) -> tuple[str, MarginTier]:
    account = checks.account(ctx.cfg, name, asset)
    tier = ctx.cfg.margin_tier(account)
    if tier is None:
        raise Rejected(Reason.NOT_A_MARGIN_ACCOUNT, f"{account} takes no loans: use margin or isolated:<PAIR>")
    return account, tier


def market_of(ctx: Context) -> Market:
    if ctx.market is None:
        raise Rejected(Reason.PRICE_UNAVAILABLE, "no market in force on this partition yet")
    return ctx.market


def quote_scale(ctx: Context) -> int:
    return ctx.cfg.assets[ctx.cfg.valuation_asset].scale


def price_of(ctx: Context, asset: str) -> int:
    """The asset's mark price in force, in valuation units; refused when there is none or it is stale."""
    if asset == ctx.cfg.valuation_asset:
        return PRICE_ONE
    price = market_of(ctx).price(asset, ctx.now_ms, ctx.cfg.price_max_age_ms)
    if price is None:
        raise Rejected(Reason.PRICE_UNAVAILABLE, f"no mark price of {asset} within "
                                                 f"{ctx.cfg.price_max_age_ms} ms: try again when prices flow")
    return price


def valued(state: UserState, ctx: Context, account: str) -> tuple[int, int]:
    """(assets, liabilities) of the account in minor units of the valuation asset: what it holds (available
    and frozen, less what open withdrawals froze: `leaving`) valued down; what it owes (principal, interest
    booked, and interest since) valued up."""
    cfg, market, now = ctx.cfg, market_of(ctx), ctx.now_ms
    quote = quote_scale(ctx)
    assets = liabilities = 0
    out = leaving(state, account) if state.withdrawals else None
    for (name, asset), (available, frozen, borrowed) in state.balances.items():
        if name != account:
            continue
        price, scale = price_of(ctx, asset), cfg.assets[asset].scale
        held = available + frozen - (out.get(asset, 0) if out else 0)
        assert held >= 0, f"{account} {asset}: withdrawals froze more than the account holds"
        if held:
            assets += value_down(held, scale, price, quote)
        owed = borrowed  # a loan's principal, or a reverted deposit's shortfall (processors.deposits)
        loan = state.loans.get((name, asset))
        if loan is not None:
            owed += loan.interest + _since(loan, borrowed, market.index_at(asset, now))
        if owed:
            liabilities += value_up(owed, scale, price, quote)
    return assets, liabilities


def leaving(state: UserState, account: str) -> dict[str, int]:
    """asset -> the coins of `account` frozen by its open withdrawals. They are on their way out (a signer may
    already hold one), so no valuation counts them: counted, a second withdrawal's check would pass on the
    first one's coins, and a liquidation would see collateral it can neither sell nor keep."""
    out: dict[str, int] = {}
    for w in state.withdrawals.values():
        if w.account == account and w.status in OPEN_WITHDRAWAL:
            out[w.asset] = out.get(w.asset, 0) + w.frozen
    return out


def accrued(state: UserState, ctx: Context, account: str, asset: str) -> int:
    """Interest the loan owes since it was last booked, at engine time ctx.now_ms (0 with no market)."""
    if ctx.market is None:
        return 0
    loan = state.loans[(account, asset)]
    return _since(loan, state.balances[(account, asset)][BORROWED], ctx.market.index_at(asset, ctx.now_ms))


def _booked(entry: Entry, state: UserState, account: str, asset: str, index: int) -> Loan:
    """The loan with its interest booked up to `index` (a new loan reads it from here on)."""
    loan = state.loans.get((account, asset))
    if loan is None:
        loan = state.loans[(account, asset)] = Loan(0, index)
        return loan
    accrued = _since(loan, state.balances[(account, asset)][BORROWED], index)
    if accrued:
        entry.interest(account, asset, -accrued)
        entry.system(INTEREST_ACCRUED, asset, accrued)
    loan.index = max(loan.index, index)
    return loan


def _since(loan: Loan, principal: int, index: int) -> int:
    """What the principal owes more, from the loan's reading up to `index`. An input from a topic read behind
    reads an earlier index than the loan's: it owes nothing more then (the index never goes back)."""
    return interest(principal, loan.index, max(index, loan.index))
