"""The lending pools' rates publisher: exchange-wide utilization → `BorrowRate` on the prices topic.

A pool's hourly rate follows its utilization U = borrowed / supplied (processors.rates, Aave's kinked model), and
U must be the exchange's, not a partition's: each partition knows only its own users' loans. The audit ledger in
ClickHouse has every partition's lines, so the publisher reads the principal lent out per asset there (the
`loans` view: what margin and isolated accounts owe in their `borrowed` bucket) and publishes each pool's
(borrowed, supplied) as a `BorrowRate`; the fan-out copies it to every partition, where the rate it implies takes
effect at the input's engine time (processors.market: the hours before it are charged at the old rate).

What a pool supplies is the treasury's decision (it funds the pool), not something the ledger can derive: it is
`Settings.pool_supply` (POSFLOW_POOL_SUPPLY, JSON asset -> whole units). The ledger lags the engine by the sink's
batch time (a second or two), which moves a rate by that much of an hour at most.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from processors.config import EngineConfig
from processors.rates import RATE_ONE
from streams.table import print_table

if TYPE_CHECKING:
    from sinks.store import Store
    from streams.market import MarketFeed

PUBLISH_EVERY_S = 60.0  # a rate in force for an hour moves little in a minute; the engine keeps the last one


@dataclass(frozen=True, slots=True)
class Pool:
    asset: str
    borrowed: Decimal  # whole units lent out, exchange-wide
    supplied: Decimal  # whole units the treasury put in

    def texts(self, scale: int) -> tuple[str, str]:
        """(borrowed, supplied) as decimal text at the asset's scale, as BorrowRate carries them."""
        return f"{self.borrowed:.{scale}f}", f"{self.supplied:.{scale}f}"


def borrowed(store: Store) -> dict[str, Decimal]:
    """asset -> principal lent out, exchange-wide, in whole units, from the audit ledger."""
    return {str(asset): Decimal(principal) for asset, principal in
            store.query("SELECT asset, principal FROM loans WHERE principal != 0").rows}


def pools(cfg: EngineConfig, lent: dict[str, Decimal], supply: dict[str, Decimal]) -> list[Pool]:
    """One pool per asset with a rate model, in name order. A pool with no supply configured is skipped: no
    utilization can be said of it (the engine keeps the rate it last had)."""
    out = []
    for asset in sorted(cfg.rate_models):
        supplied = supply.get(asset)
        if supplied is None or supplied <= 0:
            continue
        out.append(Pool(asset, lent.get(asset, Decimal(0)), supplied))
    return out


def hourly_percent(cfg: EngineConfig, pool: Pool) -> str:
    """The hourly rate the engine will compute from this pool's figures (for the operator's table)."""
    scale = cfg.assets[pool.asset].scale
    unit = 10**scale
    rate = cfg.rate_models[pool.asset].hourly(int(pool.borrowed * unit), int(pool.supplied * unit))
    return f"{Decimal(rate) * 100 / RATE_ONE:.6f}%"


def publish_once(cfg: EngineConfig, store: Store, feed: MarketFeed, supply: dict[str, Decimal]) -> list[Pool]:
    found = pools(cfg, borrowed(store), supply)
    for pool in found:
        feed.rate(pool.asset, *pool.texts(cfg.assets[pool.asset].scale))
    feed.flush()
    return found


def run(cfg: EngineConfig, store: Store, feed: MarketFeed, supply: dict[str, Decimal], every_s: float,
        rounds: int | None) -> int:
    """Publish every `every_s` seconds, `rounds` times (None: until interrupted), with a table each time."""
    n = 0
    while rounds is None or n < rounds:
        if n:
            time.sleep(every_s)
        found = publish_once(cfg, store, feed, supply)
        n += 1
        print(f"round {n}: {len(found)} pools published to the prices topic", file=sys.stderr)
        print_table(["asset", "borrowed", "supplied", "utilization", "hourly rate"],
                    [(p.asset, p.borrowed, p.supplied, f"{p.borrowed * 100 / p.supplied:.2f}%",
                      hourly_percent(cfg, p)) for p in found])
    return 0
