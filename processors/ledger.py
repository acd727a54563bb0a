"""Building one double-entry ledger entry while applying it to a user's balances.

Handlers call this only after every check has passed, so a posting that breaks an invariant is a bug
in the core, not bad input: it fails loudly (AssertionError) instead of being turned into a result.
"""

from __future__ import annotations

from typing import Final

from processors.applied import Applied
from processors.messages import Bucket, Command, LedgerLine
from processors.reasons import Reason
from processors.state import BORROWED, UserState

_INDEX: Final[dict[str, int]] = {"available": 0, "frozen": 1, "borrowed": BORROWED}

# The ledger's names, defined here once: the handlers post with them, and the ClickHouse views name them
# as {{ledger.NAME}} (sinks/sql, rendered by sinks.migrations), so the SQL cannot count a name the core
# never writes. A name on lines already landed is history: changing one here changes the rendered
# migrations, which sinks.migrations then refuses to apply over the old ones.

# Entry types: what an entry records (each of its lines' entry_type).
DEPOSIT: Final = "DEPOSIT"
DEPOSIT_REVERSAL: Final = "DEPOSIT_REVERSAL"
TRANSFER: Final = "TRANSFER"
ORDER_HOLD: Final = "ORDER_HOLD"
ORDER_RELEASE: Final = "ORDER_RELEASE"
FILL: Final = "FILL"
WITHDRAWAL_FREEZE: Final = "WITHDRAWAL_FREEZE"
WITHDRAWAL: Final = "WITHDRAWAL"
WITHDRAWAL_RETURN: Final = "WITHDRAWAL_RETURN"
BORROW: Final = "BORROW"
REPAY: Final = "REPAY"
# A liquidation (processors.liquidation): its start or next part (holds released, debts paid from what the
# account holds of them, orders' amounts frozen, a shortfall paid), and each fill of its orders.
LIQUIDATION: Final = "LIQUIDATION"
LIQUIDATION_FILL: Final = "LIQUIDATION_FILL"
# A partition's interest of a full hour recognized as income (processors.accrual).
INTEREST_HOURLY: Final = "INTEREST_HOURLY"
ENTRY_TYPES: Final = frozenset((DEPOSIT, DEPOSIT_REVERSAL, TRANSFER, ORDER_HOLD, ORDER_RELEASE, FILL,
                                WITHDRAWAL_FREEZE, WITHDRAWAL, WITHDRAWAL_RETURN, BORROW, REPAY, LIQUIDATION,
                                LIQUIDATION_FILL, INTEREST_HOURLY))

# System accounts: the exchange's own side of an entry. Their lines have user_id SYSTEM_USER, bucket
# "balance", and an account named SYSTEM_PREFIX + name; their balances live in the ledger only.
SYSTEM_USER: Final = ""
SYSTEM_PREFIX: Final = "sys:"
CLEARING: Final = "sys:clearing"  # both sides of every fill: nets to zero per asset across the sides
FEE_REVENUE: Final = "sys:fee_revenue"  # trading and withdrawal fees
CUSTODY_PREFIX: Final = "sys:custody:"  # + chain: what the exchange holds on that chain, negated
# Margin loans (processors.loans). A loan moves the pool's funds to the user (LENDING_POOL) and books the
# user's debt against the exchange's claim on it (LOANS_RECEIVABLE). Interest is income hour by hour, per
# partition and asset (INTEREST_HOURLY entries: INTEREST_ACCRUED to INTEREST_INCOME, processors.accrual); a
# loan's share of it is attributed to the loan when the loan is touched (INTEREST_ACCRUED to the user's bucket
# "interest", the user's liability until paid). INTEREST_ACCRUED holds what accrued and is not attributed yet.
LENDING_POOL: Final = "sys:lending_pool"
LOANS_RECEIVABLE: Final = "sys:loans_receivable"
INTEREST_INCOME: Final = "sys:interest_income"
INTEREST_ACCRUED: Final = "sys:interest_accrued"
# Liquidations' clearance fees come in; a liquidated account's debts its assets could not pay go out.
INSURANCE_FUND: Final = "sys:insurance_fund"
_SYSTEM_ACCOUNTS: Final = frozenset((CLEARING, FEE_REVENUE, LENDING_POOL, LOANS_RECEIVABLE, INTEREST_INCOME,
                                     INTEREST_ACCRUED, INSURANCE_FUND))


def custody(chain: str) -> str:
    """The custody account of one chain: a deposit debits it, a withdrawal sent credits it back."""
    return CUSTODY_PREFIX + chain


def entry_id(cmd: Command, suffix: str = "") -> str:
    """A ledger entry's id: its input's source and id. Ids are unique within a source only (a user may
    send a command under a coming deposit's id), so the source keeps two inputs' lines apart."""
    assert cmd.source, f"{cmd.id}: the core sets every input's source before its handler runs"
    return f"{cmd.source}/{cmd.id}{suffix}"


class Entry(Applied):
    """One entry, posted line by line; once closed (`applied`), it is its handler's answer itself: an Applied
    built per input on top of the entry was 2.5% of the core."""

    __slots__ = ("entry_id", "entry_type", "first", "first_net", "net", "posted", "state", "ts_ms")

    def __init__(self, state: UserState, entry_id: str, entry_type: str, ts_ms: int) -> None:
        assert entry_type in ENTRY_TYPES, f"entry type {entry_type} is not declared in processors.ledger"
        super().__init__()
        self.state = state
        self.entry_id = entry_id
        self.entry_type = entry_type
        self.ts_ms = ts_ms
        self.posted: list[LedgerLine] = []
        # The sum of the lines so far per asset, all zero when the entry closes: the first asset's in slots (most
        # entries move one asset; a dict per entry was 2% of the core), any other's in `net` (fills, made then).
        self.first = ""
        self.first_net = 0
        self.net: dict[str, int] | None = None

    def user(self, account: str, asset: str, bucket: Bucket, amount: int) -> None:
        """Post to the user's own bucket. For `borrowed`, `amount` is the ledger amount (-liability)."""
        assert amount != 0, "a zero line says nothing"
        state = self.state
        triple = state.balances.get((account, asset))
        if triple is None:
            triple = state.balances[(account, asset)] = [0, 0, 0]
        i = _INDEX[bucket]
        before = triple[i]
        if i == BORROWED:
            # The borrowed bucket holds the liability as a positive number; its ledger amount is negated.
            after = before - amount
            assert after >= 0, f"{state.user_id} {account}/{asset}/borrowed: {before} - {amount} < 0"
            triple[i] = after
            before, after = -before, -after
        else:
            after = before + amount
            assert after >= 0, f"{state.user_id} {account}/{asset}/{bucket}: {before} + {amount} < 0"
            triple[i] = after
        if not (triple[0] or triple[1] or triple[2]):
            del state.balances[(account, asset)]  # an empty balance is no state: the ledger keeps its history
        state.seq += 1
        self.posted.append(LedgerLine(state.user_id, self.ts_ms, self.entry_id, self.entry_type, len(self.posted),
                                     state.user_id, account, bucket, asset, amount, before, after, state.seq))
        self._sum(asset, amount)

    def interest(self, account: str, asset: str, amount: int) -> None:
        """Post to the interest a margin loan owes (`UserState.loans`); `amount` is the ledger amount
        (-liability), as for `borrowed`. The loan exists: its handler made it, or found it."""
        assert amount != 0, "a zero line says nothing"
        state = self.state
        loan = state.loans[(account, asset)]
        before = loan.interest
        after = before - amount
        assert after >= 0, f"{state.user_id} {account}/{asset}/interest: {before} - {amount} < 0"
        loan.interest = after
        state.seq += 1
        self.posted.append(LedgerLine(state.user_id, self.ts_ms, self.entry_id, self.entry_type, len(self.posted),
                                     state.user_id, account, "interest", asset, amount, -before, -after, state.seq))
        self._sum(asset, amount)

    def system(self, account: str, asset: str, amount: int) -> None:
        """Post to a system account (CLEARING, FEE_REVENUE, custody(chain)); its balance lives in the ledger,
        not in user state."""
        assert amount != 0, "a zero line says nothing"
        assert account in _SYSTEM_ACCOUNTS or account.startswith(CUSTODY_PREFIX), f"{account}: no system account"
        state = self.state
        state.seq += 1
        self.posted.append(LedgerLine(state.user_id, self.ts_ms, self.entry_id, self.entry_type, len(self.posted),
                                     SYSTEM_USER, account, "balance", asset, amount, None, None, state.seq))
        self._sum(asset, amount)

    def _sum(self, asset: str, amount: int) -> None:
        if asset == self.first:
            self.first_net += amount
        elif not self.first:
            self.first = asset
            self.first_net = amount
        elif self.net is None:
            self.net = {asset: amount}
        else:
            self.net[asset] = self.net.get(asset, 0) + amount

    def close(self) -> tuple[LedgerLine, ...]:
        """Postcondition of every entry: debits equal credits in each asset (DESIGN §2.2)."""
        assert self.posted, f"entry {self.entry_id} has no lines"
        assert self.first_net == 0, f"entry {self.entry_id} ({self.entry_type}) unbalanced in {self.first}"
        if self.net is not None:
            for asset, net in self.net.items():
                assert net == 0, f"entry {self.entry_id} ({self.entry_type}) unbalanced in {asset}"
        self.lines = tuple(self.posted)
        return self.lines

    def applied(self, flag: Reason | None = None, detail: str = "") -> Applied:
        """The entry closed, as what its handler applied."""
        self.close()
        self.flag = flag
        self.detail = detail
        return self
