"""Runtime settings, read once from the environment.

Every knob has a default that works with the local stack (`make up`), so a new user sets nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _json_env(name: str) -> dict[str, int]:
    text = _env(name, "{}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be a JSON object, e.g. '{{\"dedup_horizon_ms\": 3000}}': {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, e.g. '{{\"dedup_horizon_ms\": 3000}}'; got {text}")
    return value


POOL_SUPPLY = {"USDT": "50000000", "USDC": "50000000", "BTC": "500", "ETH": "10000"}  # the local stack's treasury


def _supply_env(name: str) -> dict[str, Decimal]:
    """asset -> whole units, from a JSON object of decimal texts (or numbers); the local stack's when unset."""
    raw = os.environ.get(name, "").strip()
    try:
        value = json.loads(raw) if raw else POOL_SUPPLY
        if not isinstance(value, dict):
            raise ValueError("not an object")
        supply = {str(asset): Decimal(str(units)) for asset, units in value.items()}
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"{name} must be a JSON object of asset to whole units, e.g. "
                         f"'{{\"USDT\": \"50000000\"}}': {exc}") from None
    if any(not units.is_finite() or units < 0 for units in supply.values()):
        raise ValueError(f"{name}: every supply must be a finite amount >= 0; got {raw}")
    return supply


@dataclass(frozen=True)
class Settings:
    """Where posflow finds its parts. Ports match deploy/local/lib.sh."""

    kafka_bootstrap: str = field(
        default_factory=lambda: _env("KAFKA_BOOTSTRAP", f"127.0.0.1:{_env('KAFKA_PORT', '19092')}")
    )
    anvil_url: str = field(default_factory=lambda: _env("ANVIL_URL", f"http://127.0.0.1:{_env('ANVIL_PORT', '18545')}"))
    topic_prefix: str = field(default_factory=lambda: _env("POSFLOW_TOPIC_PREFIX", "posflow."))
    partitions: int = field(default_factory=lambda: int(_env("POSFLOW_PARTITIONS", "4")))
    replication: int = field(default_factory=lambda: int(_env("POSFLOW_REPLICATION", "1")))
    app_id: str = field(default_factory=lambda: _env("POSFLOW_APP_ID", "posflow-engine"))
    home: Path = field(default_factory=lambda: Path(_env("POSFLOW_HOME", str(REPO_ROOT / ".local"))))
    web_port: int = field(default_factory=lambda: int(_env("POSFLOW_WEB_PORT", "6066")))
    clickhouse_url: str = field(default_factory=lambda: _env("CLICKHOUSE_URL", ""))
    # Where the sink serves its embedded chDB over ClickHouse's HTTP interface (loopback; 0: not at all).
    clickhouse_http_port: int = field(default_factory=lambda: int(_env("POSFLOW_CLICKHOUSE_HTTP_PORT", "18123")))
    # How long a silent (crashed) worker keeps its partitions before the group hands them on.
    session_timeout_s: float = field(default_factory=lambda: float(_env("POSFLOW_SESSION_TIMEOUT_S", "15")))
    # A partition with records waiting and no progress for this long makes the worker exit (to be
    # restarted): the guard against Faust leaving an assigned partition unfetched after a rebalance.
    stall_s: float = field(default_factory=lambda: float(_env("POSFLOW_STALL_S", "30")))
    # How often a worker writes a clock tick to each partition it owns (the sweep of expired memory records
    # and parked chain events runs on ticks, by engine time).
    tick_s: float = field(default_factory=lambda: float(_env("POSFLOW_TICK_S", "60")))
    # Engine knobs replaced for tests and the local stack, JSON (processors.config.with_overrides).
    engine_overrides: dict[str, int] = field(default_factory=lambda: _json_env("POSFLOW_ENGINE_OVERRIDES"))
    # What the treasury supplies to each lending pool, in whole units (streams.rates: utilization's denominator).
    pool_supply: dict[str, Decimal] = field(default_factory=lambda: _supply_env("POSFLOW_POOL_SUPPLY"))
    # Fault injection, for crash tests only: the worker SIGKILLs itself right after the outputs of the
    # step that applied this input id are acknowledged, before the step's states are stored.
    fault_kill_after: str = field(default_factory=lambda: _env("POSFLOW_FAULT_KILL_AFTER", ""))
    # Fault injection, for quarantine tests only: applying this input id fails an assertion in the core.
    fault_assert_on: str = field(default_factory=lambda: _env("POSFLOW_FAULT_ASSERT_ON", ""))

    def __post_init__(self) -> None:
        assert self.partitions >= 1, "POSFLOW_PARTITIONS must be a positive integer"
        assert self.replication >= 1, "POSFLOW_REPLICATION must be a positive integer"

    @property
    def data_dir(self) -> Path:
        """Faust's RocksDB tables; one folder per worker so that two workers on one host never share."""
        return self.home / "faust" / f"{self.app_id}-{self.web_port}"
