"""Interest recognized each hour: one ledger entry per partition, asset and full hour, in O(assets).

A loan's interest is attributed to it lazily (processors.loans): when the loan is touched, principal x (index now
- its reading) is booked to its `interest` bucket, against `sys:interest_accrued`. Between touches nothing is
booked for it, so income would show only when users act. Here each partition keeps, per asset, what its loans
add up to: P = the sum of their principals, S = the sum of principal x reading, and B = the balance of
`sys:interest_accrued` its entries left. What the loans have accrued and not yet been attributed is I x P - S at
the asset's index I, exact; at each full hour (the clock tick that charges it into the index,
processors.batch) the partition books the difference between that, rounded up, and what B already holds:

    x = B + ceil((I x P - S) / RATE_ONE)        sys:interest_accrued -x, sys:interest_income +x

so afterwards `sys:interest_accrued` holds exactly -ceil(accrued and not attributed), and income is recognized
hour by hour whatever the users do. x is the hour's interest plus the rounding of the attributions since the
last hour (each attribution rounds up, a loan's first hour is attributed as the loan is made): it is never
carried over, as the target is absolute. An hour costs O(assets): P and S change only with the loans of the
users a step touches (`Accrual.add`).

Crash safety. The aggregates are stored in the partition's market record, which a step writes before any user
state (processors.batch.Step.memory_entries), with the aggregates as the step found them. A re-applied step
starts its hourly entries from those (the same entries, the same amounts); its own aggregate changes are not
counted again (inputs already in a stored state are skipped), it takes the stored end instead.

The entries' owner is the partition's accrual ledger, `sys:accrual/p<partition>` (user ids never start with
`sys:`), with its own line sequence 1..n, kept with the aggregates.
"""

from __future__ import annotations

from typing import Any, Final

from processors.ledger import INTEREST_ACCRUED, INTEREST_HOURLY, INTEREST_INCOME, SYSTEM_PREFIX, SYSTEM_USER
from processors.messages import LedgerLine
from processors.rates import RATE_ONE
from processors.state import BORROWED, UserState

ASSETS_MAX: Final = 4_096  # pools a partition keeps (assets are listed by the exchange: bounded by config)

Sums = dict[str, tuple[int, int]]  # asset -> (sum of principals, sum of principal x reading)


def owner(partition: int) -> str:
    """The owner (Kafka key, line sequence) of a partition's hourly entries."""
    return f"{SYSTEM_PREFIX}accrual/p{partition}"


def sums(state: UserState | None) -> Sums:
    """What a user's loans add to their partition's P and S per asset."""
    out: Sums = {}
    if state is None or not state.loans:
        return out
    for (account, asset), loan in state.loans.items():
        principal = state.balances[(account, asset)][BORROWED]
        if principal:
            p, s = out.get(asset, (0, 0))
            out[asset] = (p + principal, s + principal * loan.index)
    return out


class Accrual:
    """A partition's aggregates: per asset [P, S, B], and the line sequence of its entries."""

    __slots__ = ("pools", "seq")

    def __init__(self) -> None:
        self.pools: dict[str, list[int]] = {}
        self.seq = 0

    def copy(self) -> Accrual:
        other = Accrual()
        other.pools = {asset: list(v) for asset, v in self.pools.items()}
        other.seq = self.seq
        return other

    def add(self, before: Sums, after: Sums) -> None:
        """A user's loans went from `before` to `after`."""
        for asset in before.keys() | after.keys():
            p0, s0 = before.get(asset, (0, 0))
            p1, s1 = after.get(asset, (0, 0))
            if p0 != p1 or s0 != s1:
                pool = self._pool(asset)
                pool[0] += p1 - p0
                pool[1] += s1 - s0
                assert pool[0] >= 0, f"{asset}: the partition's principal went negative"

    def attributed(self, lines: list[LedgerLine]) -> None:
        """Lines the step's users posted: those on sys:interest_accrued move B."""
        for line in lines:
            if line.account == INTEREST_ACCRUED:
                self._pool(line.asset)[2] += line.amount

    def hour(self, partition: int, hour: int, now_ms: int, index: dict[str, int]) -> list[LedgerLine]:
        """The entries of one full hour: for each asset whose recognized interest must move, two lines."""
        lines: list[LedgerLine] = []
        who = owner(partition)
        for asset in sorted(self.pools):
            p, s, b = self.pools[asset]
            unattributed = index.get(asset, 0) * p - s
            x = b - (-unattributed // RATE_ONE)  # b + ceil(unattributed / RATE_ONE), also when negative
            if not x:
                continue
            entry = f"system/interest/{hour}/{asset}"
            for n, (account, amount) in enumerate(((INTEREST_ACCRUED, -x), (INTEREST_INCOME, x))):
                self.seq += 1
                lines.append(LedgerLine(who, now_ms, entry, INTEREST_HOURLY, n, SYSTEM_USER, account, "balance",
                                        asset, amount, None, None, self.seq))
            self.pools[asset][2] -= x
        return lines

    def _pool(self, asset: str) -> list[int]:
        pool = self.pools.get(asset)
        if pool is None:
            assert len(self.pools) < ASSETS_MAX, "more lending pools than any config lists"
            pool = self.pools[asset] = [0, 0, 0]
        return pool

    def to_doc(self) -> dict[str, Any]:
        return {"pools": {asset: list(v) for asset, v in sorted(self.pools.items()) if any(v)}, "seq": self.seq}

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> Accrual:
        accrual = cls()
        if doc:
            accrual.pools = {str(asset): [int(x) for x in v] for asset, v in doc["pools"].items()}
            accrual.seq = int(doc["seq"])
        return accrual
