"""Margin re-evaluation: how fast a worker finds, on a price move, the margin accounts whose band may change
(processors.exposure: columnar, numpy). 100,000 watched accounts exposed to BTC on one worker; BTC moves by a
random walk; each move screens every exposed account. `margin_evals_per_s` counts accounts screened per
second; `tick_ms_p99` is the time of one move's screen (p99 over the moves). The accounts the screen returns
are re-valued exactly from their states in the worker's step (processors.monitor): counted here per move,
their cost is part of the engine's step, not of this figure. Price to liquidation end to end is measured
by bench/liquidation.py (`price_to_liquidation_p99_ms`), merged into the same margin.json."""

from __future__ import annotations

import random
import statistics
import time
from fractions import Fraction
from typing import Any

from processors.config import default_config
from processors.exposure import Exposure, Row
from processors.margin import CROSS_3X, CROSS_5X

USERS = 100_000
MOVES = 300


def run(users: int = USERS, moves: int = MOVES, seed: int = 7) -> dict[str, Any]:
    cfg = default_config()
    rng = random.Random(seed)
    exposure = Exposure({a: x.scale for a, x in cfg.assets.items()}, capacity=users)
    for n in range(users):
        btc = rng.randrange(1, 10**8)  # up to 1 BTC held
        usdt_debt = btc * 60_000 // 100 * rng.randrange(20, 80) // 100  # 20-80% of its value at 60,000, in USDT
        row = Row({"BTC": btc, "USDT": rng.randrange(0, 10**9)}, {"USDT": usdt_debt * 1}, {"USDT": 0}, {"USDT": 0},
                  CROSS_3X if n % 2 else CROSS_5X, 0)
        exposure.put(f"u{n}", "margin", row)
    price = 60_000.0
    times, picked = [], 0
    index = {"USDT": 0}
    exposed = len(exposure.exposed("BTC"))

    def market(at: float) -> dict[str, Fraction | int | float | None]:
        return {"BTC": Fraction(round(at * 100), 100), "ETH": None, "USDC": Fraction(1), "USDT": 1}

    def settle(keys: list[tuple[str, str]], prices: dict[str, Fraction | int | float | None]) -> None:
        """What the exact re-valuation leaves in the states (the float band stands in for it here)."""
        rows, _, band, _ = exposure.bands("BTC", prices, index)
        bands = dict(zip(rows.tolist(), band.tolist(), strict=True))
        for user, account in keys:
            exposure.set_band(user, account, bands[exposure.row_of[(user, account)]])

    settle([k for k in exposure.keys if k is not None], market(price))  # the bands the states hold at the start
    for _ in range(moves):
        price *= 1 + rng.uniform(-0.01, 0.01)
        prices = market(price)
        start = time.perf_counter()
        found = exposure.screen("BTC", prices, index)
        times.append(time.perf_counter() - start)
        picked += len(found)
        settle(found, prices)
    times.sort()
    return {
        "tick_users": exposed,
        "margin_evals_per_s": round(exposed * moves / sum(times)),
        "tick_ms_p50": round(statistics.median(times) * 1000, 2),
        "tick_ms_p99": round(times[int(len(times) * 0.99) - 1] * 1000, 2),
        "rechecks_per_move": round(picked / moves, 1),
        "price_to_liquidation_p99_ms": None,
    }


if __name__ == "__main__":
    print(run())
