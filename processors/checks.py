"""Validation shared by the handlers. Each raises Rejected with the specific reason; none mutates."""

from __future__ import annotations

from processors.config import Chain, EngineConfig
from processors.money import Asset, Rejected, parse_amount
from processors.reasons import Reason
from processors.state import UserState


def asset(cfg: EngineConfig, symbol: str) -> Asset:
    found = cfg.assets.get(symbol)
    if found is None:
        raise Rejected(Reason.UNKNOWN_ASSET, f"{symbol!r} is not a listed asset")
    return found


def chain_asset(cfg: EngineConfig, chain_name: str, symbol: str) -> tuple[Chain, str]:
    """A supported chain and a listed asset that moves on it."""
    chain = cfg.chains.get(chain_name)
    if chain is None:
        raise Rejected(Reason.UNKNOWN_CHAIN, f"{chain_name!r} is not a supported chain")
    listed = asset(cfg, symbol).symbol
    if listed not in chain.assets:
        raise Rejected(Reason.UNKNOWN_ASSET, f"{listed} does not move on {chain.name}")
    return chain, listed


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


def not_liquidating(state: UserState, account: str) -> None:
    """Refuses what would move funds or exposure of a margin account under liquidation (processors.liquidation)."""
    if state.liquidations and account in state.liquidations:
        raise Rejected(Reason.ACCOUNT_LIQUIDATING, f"{account} is being liquidated: wait for LiquidationCompleted")


def present(field: str, value: str) -> str:
    if not value:
        raise Rejected(Reason.MALFORMED_COMMAND, f"{field} must not be empty")
    return value


def ident(cfg: EngineConfig, field: str, value: str) -> str:
    """An id or name from a client: non-empty printable text of at most `id_max` bytes of UTF-8 (it is kept in
    state, whose byte bound counts bytes: a character may take 4)."""
    if not value:
        raise Rejected(Reason.MALFORMED_COMMAND, f"{field} must not be empty")
    if len(value) > cfg.id_max or not value.isprintable() or (not value.isascii() and len(value.encode()) > cfg.id_max):
        raise Rejected(Reason.MALFORMED_COMMAND, f"{field} must be printable text of at most {cfg.id_max} bytes "
                                                 "of UTF-8")
    return value


def order_key(cfg: EngineConfig, field: str, value: str) -> str:
    """An order id or fill id: an `ident` without `"` or `\\`. A state keeps up to open_holds_max x
    (1 + fills_per_hold) of them, and JSON stores each of those two characters escaped, in 2 bytes: ids of
    them would double the state's bound (test_caps_bound_...)."""
    ident(cfg, field, value)
    if '"' in value or "\\" in value:
        raise Rejected(Reason.MALFORMED_COMMAND, f"{field} must not hold \" or \\")
    return value
