"""Validation shared by the handlers. Each raises Rejected with the specific reason; none mutates."""

from __future__ import annotations

from processors.config import EngineConfig
from processors.money import Asset, Rejected, parse_amount
from processors.reasons import Reason
from processors.state import UserState


def asset(cfg: EngineConfig, symbol: str) -> Asset:
    found = cfg.assets.get(symbol)
    if found is None:
        raise Rejected(Reason.UNKNOWN_ASSET, f"{symbol!r} is not a listed asset")
    return found


def amount(cfg: EngineConfig, symbol: str, text: str, *, allow_zero: bool = False) -> int:
    return parse_amount(text, asset(cfg, symbol).scale, allow_zero=allow_zero)


def account(cfg: EngineConfig, name: str, symbol: str) -> str:
    if not cfg.valid_account(name, symbol):
        raise Rejected(
            Reason.UNKNOWN_ACCOUNT,
            f"{name!r} cannot hold {symbol}: use spot, margin, futures, staking or isolated:<BASE>-<QUOTE>",
        )
    return name


def funds(state: UserState, name: str, symbol: str, need: int) -> None:
    have = state.available(name, symbol)
    if have < need:
        raise Rejected(Reason.INSUFFICIENT_FUNDS, f"{name} {symbol}: need {need}, available {have} (minor units)")


def present(field: str, value: str) -> str:
    if not value:
        raise Rejected(Reason.MALFORMED_COMMAND, f"{field} must not be empty")
    return value
