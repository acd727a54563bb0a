"""Opening an account and moving funds between a user's own sub-accounts."""

from __future__ import annotations

from processors import checks
from processors.applied import Applied
from processors.config import EngineConfig
from processors.ledger import Entry
from processors.messages import Command, Transfer
from processors.money import Rejected
from processors.reasons import Reason
from processors.state import UserState


def transfer(state: UserState, cmd: Command, cfg: EngineConfig) -> Applied:
    body: Transfer = cmd.body  # type: ignore[assignment]
    asset = checks.asset(cfg, body["asset"]).symbol
    src = checks.account(cfg, body["from_account"], asset)
    dst = checks.account(cfg, body["to_account"], asset)
    if src == dst:
        raise Rejected(Reason.SAME_ACCOUNT, f"from and to are both {src}")
    amount = checks.amount(cfg, asset, body["amount"])
    checks.funds(state, src, asset, amount)
    entry = Entry(state, cmd.id, "TRANSFER", cmd.ts_ms)
    entry.user(src, asset, "available", -amount)
    entry.user(dst, asset, "available", amount)
    return Applied(entry.close())
