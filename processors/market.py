"""A partition's market: the mark prices and borrow rates in force, and each asset's borrow index.

Prices and rates reach every partition as its own system inputs (DESIGN §1a), so the journal of a step's
input order fixes which ones each input saw. Only those system inputs change the market (a user's input
never does: the engine times of two input topics are not in order with each other); every reading takes
the engine time of the input that reads it instead.

Interest hours (processors.rates): `charged_hour` is the last full hour charged into the index; a reading at
a later engine time counts the hours since at the rate in force (`index_at`), so a loan made at 10:20 reads
the index as it will be once the hour of 10:00 is charged (it paid that hour as it was made), whether or not
the clock tick of 10:00 has come yet. A rate change or a tick first charges the hours up to its own time at
the old rate (`advance`): however few system inputs come, an hour costs O(assets), never O(users).
"""

from __future__ import annotations

from typing import Any, Final

from processors.rates import hour_of

NO_HOUR: Final = -1  # nothing charged yet: the first system input starts the count at its own hour
PRICES_MAX: Final = 4_096  # symbols a partition keeps prices of (a price source is trusted, but bounded)


class Market:
    __slots__ = ("charged_hour", "index", "prices", "rates")

    def __init__(self) -> None:
        self.prices: dict[str, tuple[int, int]] = {}  # asset -> (mark price, time it was priced)
        self.rates: dict[str, int] = {}  # asset -> hourly borrow rate in force (processors.rates units)
        self.index: dict[str, int] = {}  # asset -> the sum of the hourly rates charged through charged_hour
        self.charged_hour = NO_HOUR

    def copy(self) -> Market:
        market = Market()
        market.prices = dict(self.prices)
        market.rates = dict(self.rates)
        market.index = dict(self.index)
        market.charged_hour = self.charged_hour
        return market

    def advance(self, now_ms: int) -> int:
        """Charge the full hours up to `now_ms` at the rates in force; the number of hours charged. A time
        behind the hours charged (an input topic read behind another) charges nothing."""
        hour = hour_of(now_ms)
        if self.charged_hour == NO_HOUR:
            self.charged_hour = hour
            return 0
        hours = hour - self.charged_hour
        if hours <= 0:
            return 0
        for asset, rate in self.rates.items():
            self.index[asset] = self.index.get(asset, 0) + hours * rate
        self.charged_hour = hour
        return hours

    def index_at(self, asset: str, now_ms: int) -> int:
        """The asset's index as a reading at `now_ms` sees it: charged through its own hour."""
        index = self.index.get(asset, 0)
        if self.charged_hour == NO_HOUR:
            return index
        hours = hour_of(now_ms) - self.charged_hour
        return index + hours * self.rates.get(asset, 0) if hours > 0 else index

    def set_price(self, asset: str, price: int, priced_ms: int, now_ms: int) -> None:
        """`price` in force from engine time `now_ms`; its age counts from `priced_ms` (at or before now)."""
        assert price > 0 and priced_ms <= now_ms
        assert asset in self.prices or len(self.prices) < PRICES_MAX, f"more than {PRICES_MAX} priced assets"
        self.advance(now_ms)
        self.prices[asset] = (price, priced_ms)

    def set_rate(self, asset: str, hourly: int, now_ms: int) -> None:
        assert hourly >= 0
        self.advance(now_ms)  # the hours before the change at the old rate
        self.rates[asset] = hourly

    def price(self, asset: str, now_ms: int, max_age_ms: int) -> int | None:
        """The mark price in force, if it is at most `max_age_ms` old at `now_ms` (a stale price is no price:
        it never liquidates)."""
        found = self.prices.get(asset)
        if found is None or now_ms - found[1] > max_age_ms:
            return None
        return found[0]

    # -- storage -----------------------------------------------------------------------------
    def to_doc(self) -> dict[str, Any]:
        return {"hour": self.charged_hour, "prices": {a: list(p) for a, p in self.prices.items()},
                "rates": self.rates, "index": self.index}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Market:
        market = cls()
        market.charged_hour = int(doc["hour"])
        market.prices = {a: (int(p), int(ts)) for a, (p, ts) in doc["prices"].items()}
        market.rates = {a: int(r) for a, r in doc["rates"].items()}
        market.index = {a: int(i) for a, i in doc["index"].items()}
        return market
