"""Engine configuration: assets, chains, withdrawal tiers. Pure data, passed into the core."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

from processors.margin import CROSS_3X, MarginTier, tier
from processors.money import Asset
from processors.rates import RateModel, model

SUB_ACCOUNTS: Final = frozenset({"spot", "margin", "futures", "staking"})
_ISOLATED: Final = re.compile(r"isolated:([A-Z0-9]{2,12})-([A-Z0-9]{2,12})")
DAY_MS: Final = 24 * 3600 * 1000
DEFAULT_MARKETS: Final = frozenset({"BTC-USDT", "ETH-USDT", "ETH-BTC", "BTC-USDC", "ETH-USDC", "USDC-USDT"})


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    address_pattern: str  # full-match regex of a valid address
    confirmations: int  # depth at which a deposit is credited
    assets: frozenset[str]

    def valid_address(self, address: str) -> bool:
        return _compiled(self.address_pattern).fullmatch(address) is not None


_PATTERNS: Final[dict[str, re.Pattern[str]]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, kept: `re.fullmatch(text, ...)` looks the text up in re's cache on every call
    (2% of the core on the bench workload, where one input in twenty is a withdrawal)."""
    found = _PATTERNS.get(pattern)
    if found is None:
        found = _PATTERNS[pattern] = re.compile(pattern)
    return found


@dataclass(frozen=True, slots=True)
class AssetRules:
    min_deposit: int  # minor units; smaller deposits are recorded, not credited
    min_withdrawal: int
    withdrawal_fee: int  # the least fee a withdrawal must carry
    auto_approve_below: int  # withdrawals below this need no approver
    two_approvers_from: int  # from this amount on, two distinct approvers


@dataclass(frozen=True)
class EngineConfig:
    assets: dict[str, Asset]
    rules: dict[str, AssetRules]
    chains: dict[str, Chain]
    # Recent input ids per user, with their results: a client that resends a command id gets the first
    # answer again. (Redelivery after a crash is caught earlier: by the partition's progress and the
    # input positions stored with each state.)
    applied_window: int = 64
    # The most recently closed orders per user, and the latest fills of each open order, are kept in the state;
    # older ones are let go to the engine's memory (processors.orders). Most users never close more orders
    # within a horizon, nor fill one order more often: their orders cost no memory record and no lookup. At
    # most open_holds_max x fills_per_hold ids of fills in a state (1000 x 4 x id_max bytes: 512 KB at worst).
    closed_orders_kept: int = 16
    fills_per_hold: int = 4
    closed_withdrawals_kept: int = 32
    # An applied input's id, a closed order's id and a fill id are remembered at least this long (engine
    # time): longer than the input topics keep a record, so no resend the log can hold applies twice.
    dedup_horizon_ms: int = 8 * DAY_MS
    # The sweep of expired memory records on clock ticks (processors.batch): records are indexed by the
    # end of the period they expire in, and deleted only a grace after expiry, since engine time comes
    # from the clocks of several brokers (one per input partition's leader).
    sweep_period_ms: int = 3_600_000
    sweep_grace_ms: int = 3_600_000
    # Caps per user: every collection a client can grow is bounded (UserState.check; test_caps_bound_...).
    parked_max: int = 16  # chain events waiting for their withdrawal or for the account to open
    parked_ttl_ms: int = 7 * DAY_MS  # then a parked chain event is given up, with a PARKED_EXPIRED result
    open_holds_max: int = 1000
    open_withdrawals_max: int = 16
    funded_accounts_max: int = 16  # sub-accounts holding any balance
    id_max: int = 128  # bytes (UTF-8) of an input id, and of any id or name inside a body
    # Isolated margin exists for listed markets only: isolated:<BASE>-<QUOTE> for one of these.
    markets: frozenset[str] = DEFAULT_MARKETS
    # Margin (processors.margin, processors.market): assets are valued in this one, at mark prices at most
    # price_max_age_ms old (an older price is no price: it never liquidates); each lending pool's hourly rate
    # follows its utilization by its model (processors.rates). An asset without a model cannot be borrowed.
    valuation_asset: str = "USDT"
    price_max_age_ms: int = 30_000
    rate_models: dict[str, RateModel] = field(default_factory=dict)
    # The lines of the cross margin account, and of each listed market's isolated account (none: no isolated
    # margin for that market).
    cross_tier: MarginTier = CROSS_3X
    isolated_tiers: dict[str, MarginTier] = field(default_factory=dict)
    # Liquidation (processors.liquidation): the clearance fee on what a liquidation's fills receive (to the
    # insurance fund); the slippage an order is sized for beyond the debt it must pay; the most one part sells,
    # in minor units of the valuation asset (a larger account liquidates in parts), and the engine time between
    # one part's last fill and the next part; the fills one liquidation order takes.
    liquidation_fee: Fraction = Fraction(2, 100)
    liquidation_slippage: Fraction = Fraction(5, 100)
    liquidation_part_value: int = 1_000_000 * 10**6
    liquidation_cooldown_ms: int = 2_000
    liquidation_fills_max: int = 256

    def margin_tier(self, account: str) -> MarginTier | None:
        """The tier of a margin account: `margin`, or isolated:<BASE>-<QUOTE> of a market with isolated margin."""
        if account == "margin":
            return self.cross_tier
        if account.startswith("isolated:"):
            return self.isolated_tiers.get(account[len("isolated:"):])
        return None

    def valid_account(self, account: str, asset: str) -> bool:
        """spot / margin / futures / staking, or isolated:<BASE>-<QUOTE> of a listed market, holding one
        of its two assets."""
        if account in SUB_ACCOUNTS:
            return True
        m = _ISOLATED.fullmatch(account)
        return m is not None and asset in (m.group(1), m.group(2)) and f"{m.group(1)}-{m.group(2)}" in self.markets


_EVM = r"0x[0-9a-fA-F]{40}"


def default_config() -> EngineConfig:
    """What the demo, tests and benchmarks run with; production reads the same shape from config."""
    assets = {a.symbol: a for a in (Asset("BTC", 8), Asset("ETH", 18), Asset("USDT", 6), Asset("USDC", 6))}

    def rules(symbol: str, min_dep: str, min_wd: str, fee: str, auto: str, two: str) -> AssetRules:
        from processors.money import parse_amount

        s = assets[symbol].scale
        return AssetRules(
            parse_amount(min_dep, s), parse_amount(min_wd, s), parse_amount(fee, s, allow_zero=True),
            parse_amount(auto, s), parse_amount(two, s),
        )

    isolated = tier("isolated-5x", 5, "2", "1.25", "1.16", "1.1")
    return EngineConfig(
        assets=assets,
        isolated_tiers={market: isolated for market in DEFAULT_MARKETS},
        rules={
            "BTC": rules("BTC", "0.0001", "0.001", "0.0002", "1", "10"),
            "ETH": rules("ETH", "0.001", "0.01", "0.001", "20", "200"),
            "USDT": rules("USDT", "1", "10", "1", "10000", "100000"),
            "USDC": rules("USDC", "1", "10", "1", "10000", "100000"),
        },
        # Kinked models of Aave v3's shape; the figures are this exchange's, set by its treasury: stablecoins
        # 4% a year up to 90% utilization, steep above; BTC and ETH with a lower kink.
        rate_models={
            "USDT": model("0", "0.04", "0.6", "0.9"),
            "USDC": model("0", "0.04", "0.6", "0.9"),
            "BTC": model("0", "0.04", "3", "0.45"),
            "ETH": model("0", "0.027", "0.8", "0.8"),
        },
        chains={
            "ethereum": Chain("ethereum", _EVM, 12, frozenset({"ETH", "USDT", "USDC"})),
            "anvil": Chain("anvil", _EVM, 2, frozenset({"ETH", "USDT", "USDC"})),
            "bitcoin": Chain("bitcoin", r"(bc1[02-9ac-hj-np-z]{11,71}|[13][1-9A-HJ-NP-Za-km-z]{25,34})", 3,
                             frozenset({"BTC"})),
        },
    )


def with_overrides(cfg: EngineConfig, overrides: dict[str, int]) -> EngineConfig:
    """`cfg` with some of its integer knobs replaced (POSFLOW_ENGINE_OVERRIDES, JSON: for tests and the local
    stack, e.g. a dedup horizon of seconds; live configuration from a topic is a later issue)."""
    knobs = {f.name for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), int)}
    unknown = sorted(set(overrides) - knobs)
    if unknown or not all(isinstance(v, int) and v > 0 for v in overrides.values()):
        raise ValueError(f"engine overrides must be positive integers of {sorted(knobs)}; got {overrides}")
    changed: dict[str, object] = dict(overrides)  # only int fields, checked above
    return dataclasses.replace(cfg, **changed)  # type: ignore[arg-type]
