"""Building one double-entry ledger entry while applying it to a user's balances.

Handlers call this only after every check has passed, so a posting that breaks an invariant is a bug
in the core, not bad input: it fails loudly (AssertionError) instead of being turned into a result.
"""

from __future__ import annotations

from processors.messages import Bucket, LedgerLine
from processors.state import AVAILABLE, BORROWED, FROZEN, UserState

_INDEX: dict[str, int] = {"available": AVAILABLE, "frozen": FROZEN, "borrowed": BORROWED}


class Entry:
    __slots__ = ("_net", "entry_id", "entry_type", "lines", "state", "ts_ms")

    def __init__(self, state: UserState, entry_id: str, entry_type: str, ts_ms: int) -> None:
        self.state = state
        self.entry_id = entry_id
        self.entry_type = entry_type
        self.ts_ms = ts_ms
        self.lines: list[LedgerLine] = []
        self._net: dict[str, int] = {}  # asset -> sum of this entry's amounts

    def user(self, account: str, asset: str, bucket: Bucket, amount: int) -> None:
        """Post to the user's own bucket. For `borrowed`, `amount` is the ledger amount (-liability)."""
        assert amount != 0, "a zero line says nothing"
        triple = self.state.balance(account, asset)
        i = _INDEX[bucket]
        # The borrowed bucket holds the liability as a positive number; its ledger amount is negated.
        delta = -amount if i == BORROWED else amount
        before = triple[i]
        after = before + delta
        assert after >= 0, f"{self.state.user_id} {account}/{asset}/{bucket}: {before} + {delta} < 0"
        triple[i] = after
        sign = -1 if i == BORROWED else 1
        self._line(self.state.user_id, account, bucket, asset, amount, sign * before, sign * after)

    def system(self, name: str, asset: str, amount: int) -> None:
        """Post to a system account (sys:<name>); its balance lives in the ledger, not in user state."""
        assert amount != 0, "a zero line says nothing"
        self._line("", f"sys:{name}", "balance", asset, amount, None, None)

    def _line(self, user_id: str, account: str, bucket: Bucket, asset: str, amount: int,
              before: int | None, after: int | None) -> None:
        self.state.seq += 1
        n = len(self.lines)
        self.lines.append(LedgerLine(
            f"{self.state.user_id}/{self.entry_id}/{n}", self.ts_ms, self.entry_id, self.entry_type, n,
            user_id, account, bucket, asset, amount, before, after, self.state.seq,
        ))
        self._net[asset] = self._net.get(asset, 0) + amount

    def close(self) -> tuple[LedgerLine, ...]:
        """Postcondition of every entry: debits equal credits in each asset (DESIGN §2.2)."""
        assert self.lines, f"entry {self.entry_id} has no lines"
        unbalanced = {asset: net for asset, net in self._net.items() if net != 0}
        assert not unbalanced, f"entry {self.entry_id} ({self.entry_type}) unbalanced: {unbalanced}"
        return tuple(self.lines)
