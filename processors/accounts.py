"""Opening an account and moving funds between a user's own sub-accounts."""

from __future__ import annotations

from processors import checks, loans
from processors.applied import Applied
from processors.context import Context
from processors.ledger import TRANSFER, Entry, entry_id
from processors.messages import AccountUnfreeze, Command, OpenAccount, Transfer
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import UserState


def transfer(state: UserState, cmd: Command, ctx: Context) -> Applied:
    cfg = ctx.cfg
    body: Transfer = cmd.body  # type: ignore[assignment]
    asset = checks.asset(cfg, body["asset"]).symbol
    src = checks.account(cfg, body["from_account"], asset)
    dst = checks.account(cfg, body["to_account"], asset)
    if src == dst:
        raise Rejected(Reason.SAME_ACCOUNT, f"from and to are both {src}")
    amount = checks.amount(cfg, asset, body["amount"])
    checks.not_liquidating(state, src)
    checks.not_liquidating(state, dst)
    checks.funds(state, src, asset, amount)
    if state.loans:
        loans.check_out(state, ctx, src, asset, amount)
    # fewer balances than the cap means fewer funded sub-accounts too: the set is built only near the cap
    if len(state.balances) >= cfg.funded_accounts_max:
        funded = state.funded_accounts()
        if dst not in funded and len(funded) >= cfg.funded_accounts_max:
            raise Rejected(Reason.TOO_MANY_SUB_ACCOUNTS,
                           f"{len(funded)} sub-accounts hold funds; empty one before funding {dst}")
    entry = Entry(state, entry_id(cmd), TRANSFER, ctx.now_ms)
    entry.user(src, asset, "available", -amount)
    entry.user(dst, asset, "available", amount)
    return entry.applied()


def open_account(state: UserState, cmd: Command, ctx: Context) -> Applied:
    body: OpenAccount = cmd.body  # type: ignore[assignment]
    if state.opened:
        raise Rejected(Reason.USER_EXISTS, f"user {cmd.user_id} already has an account")
    if not 0 <= body["kyc_tier"] <= 3:
        raise Rejected(Reason.MALFORMED_COMMAND, "kyc_tier must be 0..3")
    checks.ident(ctx.cfg, "region", body["region"])
    assert not state.balances and state.seq == 0, "an unopened account never holds funds"
    state.opened, state.kyc_tier, state.region = True, body["kyc_tier"], body["region"]
    return Applied()


def not_per_user(state: UserState, cmd: Command, ctx: Context) -> Applied:
    """A partition's input (a clock tick) sent for one user: the step applies ticks, never a user."""
    raise Rejected(Reason.MALFORMED_COMMAND, f"{cmd.kind} is an input of a partition, not of a user")


def unfreeze(state: UserState, cmd: Command, ctx: Context) -> Applied:
    """An operator lifts a risk freeze. Ledger-neutral: a debt booked by a reversal stays booked. The
    result names the approver and the reason (the audit trail, landed with every result)."""
    body: AccountUnfreeze = cmd.body  # type: ignore[assignment]
    approver = checks.ident(ctx.cfg, "approver", body["approver"])
    reason = checks.ident(ctx.cfg, "reason", body["reason"])
    if state.status != "frozen":
        raise Rejected(Reason.NOT_FROZEN, f"the account is {state.status}")
    state.status = "normal"
    return Applied(detail=f"risk freeze lifted by {approver}: {reason}")
