"""A worker's columnar view of its watched margin accounts, to find fast whom a price move may move across a
line (DESIGN §4: an index from asset to exposed users, re-evaluated columnar and vectorized).

Floats screen, integers decide. Each row is one margin account: what it holds and owes per asset (in whole
units, float64), its loans' readings of the borrow index, its tier's lines and the band its state holds.
`screen` values the rows exposed to a moved asset at the prices in force and returns those whose band the
floats say changed, or whose level lies within a relative `MARGIN` of any line: a float's error is far below
that, so no account whose exact band changes is missed. Only those are then re-valued exactly from their
state (processors.monitor), which alone decides bands and events; a row that no price values (a stale or
missing one) is skipped, as the exact path leaves its band. Not part of the compiled core (numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from processors.margin import HEALTHY, LIQUIDATION, MARGIN_CALL, NO_BORROW, NO_TRANSFER, MarginTier
from processors.rates import RATE_ONE

MARGIN = 1e-9  # relative: float64 valuation of a few terms errs by ~1e-15
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Row:
    """One margin account as the screen sees it (amounts in minor units, exact)."""

    held: dict[str, int]  # asset -> available + frozen
    principal: dict[str, int]  # asset -> borrowed
    booked: dict[str, int]  # asset -> interest booked and unpaid
    reading: dict[str, int]  # asset -> the loan's index reading
    tier: MarginTier
    band: int


class Exposure:
    def __init__(self, scales: dict[str, int], capacity: int = 1024) -> None:
        self.assets = sorted(scales)
        self.col = {a: i for i, a in enumerate(self.assets)}
        self.unit = np.array([10.0 ** scales[a] for a in self.assets])
        self.keys: list[tuple[str, str] | None] = []  # row -> (user, account); None: a freed row
        self.row_of: dict[tuple[str, str], int] = {}
        self.free: list[int] = []
        width = len(self.assets)
        self.held: Floats = np.zeros((capacity, width))
        self.principal: Floats = np.zeros((capacity, width))
        self.booked: Floats = np.zeros((capacity, width))
        self.reading: Floats = np.zeros((capacity, width))
        self.lines: Floats = np.full((capacity, 4), np.inf)  # liquidation, call, borrow, transfer-out
        self.band = np.zeros(capacity, dtype=np.int8)
        self._exposed: dict[str, npt.NDArray[np.intp]] | None = None

    def __len__(self) -> int:
        return len(self.row_of)

    def put(self, user: str, account: str, row: Row) -> None:
        """The account as its state now is (a new row, or the row replaced)."""
        key = (user, account)
        i = self.row_of.get(key)
        if i is None:
            i = self.free.pop() if self.free else self._append()
            self.row_of[key] = i
            self.keys[i] = key
        for array, amounts in ((self.held, row.held), (self.principal, row.principal), (self.booked, row.booked)):
            array[i] = 0.0
            for asset, minor in amounts.items():
                array[i, self.col[asset]] = minor / self.unit[self.col[asset]]
        self.reading[i] = 0.0
        for asset, index in row.reading.items():
            self.reading[i, self.col[asset]] = index / RATE_ONE
        t = row.tier
        self.lines[i] = [float(t.liquidate_at), float(t.call_at), float(t.borrow_above), float(t.transfer_out_above)]
        self.band[i] = row.band
        self._exposed = None

    def drop(self, user: str, account: str) -> None:
        i = self.row_of.pop((user, account), None)
        if i is None:
            return
        self.keys[i] = None
        self.held[i] = self.principal[i] = self.booked[i] = 0.0
        self.lines[i] = np.inf
        self.free.append(i)
        self._exposed = None

    def _append(self) -> int:
        i = len(self.keys)
        if i == len(self.band):  # grow by half: amortized O(1) per row
            grow = max(1024, i // 2)
            for name in ("held", "principal", "booked", "reading"):
                array = getattr(self, name)
                setattr(self, name, np.vstack([array, np.zeros((grow, array.shape[1]))]))
            self.lines = np.vstack([self.lines, np.full((grow, 4), np.inf)])
            self.band = np.concatenate([self.band, np.zeros(grow, dtype=np.int8)])
        self.keys.append(None)
        return i

    def exposed(self, asset: str) -> npt.NDArray[np.intp]:
        """Rows that hold or owe `asset`."""
        if self._exposed is None:
            n = len(self.keys)
            touched = (self.held[:n] != 0) | (self.principal[:n] != 0)
            self._exposed = {a: np.flatnonzero(touched[:, j]) for a, j in self.col.items()}
        return self._exposed[asset]

    def set_band(self, user: str, account: str, band: int) -> None:
        """The band the account's state now holds (after its exact re-valuation)."""
        self.band[self.row_of[(user, account)]] = band

    def screen(self, moved: str, prices: dict[str, Fraction | int | float | None],
               index_now: dict[str, int]) -> list[tuple[str, str]]:
        """The accounts exposed to `moved` whose band may change at `prices` (valuation units per whole unit;
        None: no fresh price) and the borrow indexes `index_now`: re-value those exactly."""
        rows, valued, band, near = self.bands(moved, prices, index_now)
        pick = rows[valued & ((band != self.band[rows]) | near)]
        return [key for key in (self.keys[i] for i in pick) if key is not None]

    def bands(self, moved: str, prices: dict[str, Fraction | int | float | None], index_now: dict[str, int]
              ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_], npt.NDArray[np.int8], npt.NDArray[np.bool_]]:
        """For the rows exposed to `moved`: whether a price values them, their band by the floats, and whether
        their level is within MARGIN of a line."""
        rows = self.exposed(moved)
        price = np.array([np.nan if prices.get(a) is None else float(prices[a]) for a in self.assets])  # type: ignore[arg-type]
        index = np.array([index_now.get(a, 0) / RATE_ONE for a in self.assets])
        held, principal = self.held[rows], self.principal[rows]
        owed = principal + self.booked[rows] + principal * np.maximum(index - self.reading[rows], 0.0)
        involved = (held != 0) | (owed != 0)
        valued = ~np.any(involved & np.isnan(price), axis=1)
        p = np.nan_to_num(price)
        assets, liabilities = held @ p, owed @ p
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.where(liabilities > 0, assets / liabilities, np.inf)
        lines = self.lines[rows]
        band = np.full(len(rows), HEALTHY, dtype=np.int8)
        band[level <= lines[:, 3]] = NO_TRANSFER
        band[level < lines[:, 2]] = NO_BORROW
        band[level <= lines[:, 1]] = MARGIN_CALL
        band[level <= lines[:, 0]] = LIQUIDATION
        near = np.any(np.abs(level[:, None] - lines) <= MARGIN * lines, axis=1)
        return rows, valued, band, near
