"""A deterministic trading-day workload: many users, every command valid, every kind exercised.

Per user: open, deposit USDT, then cycles of hold -> fill -> release -> transfer out and back, with a
withdrawal request every fourth cycle, and finally the chain's confirmations of the withdrawals. The
steps are separate because chain events travel on their own topic: a client that needs one step's
effect before the next (an account before its deposit, a request before its confirmation) waits for
the results in between. The same generator feeds the core benchmark, the end-to-end benchmark and
the crash test; `expected_balances` is its reference model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from processors.inputs import command
from processors.messages import (
    Command,
    DepositConfirmed,
    FillSettle,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Transfer,
    WithdrawalConfirmed,
    WithdrawalRequest,
)

ADDR = "0x" + "5a" * 20


def user_name(i: int) -> str:
    return f"user{i:06d}"


def _at(ts: int, cmds: Iterable[Command]) -> Iterator[Command]:
    """The client's clock: a step's commands share one time, so reruns are identical."""
    return (c._replace(ts_ms=ts) for c in cmds)


def accounts(users: int, ts: int = 1) -> Iterator[Command]:
    return _at(ts, (command(OpenAccount, f"{user_name(i)}-open", user_name(i), kyc_tier=1, region="DE")
                    for i in range(users)))


def deposits(users: int, ts: int = 1) -> Iterator[Command]:
    return _at(ts, (command(DepositConfirmed, f"ethereum:0x{i:064x}:0", user_name(i), chain="ethereum",
                            tx_hash=f"0x{i:064x}", log_index=0, address=ADDR, asset="USDT", amount="100000",
                            block_number=1, account="spot")
                    for i in range(users)))


def cycles(users: int, rounds: int, ts: int = 2) -> Iterator[Command]:
    """Interleaves users like real traffic; each round emits 5 commands per user (7 with a withdrawal)."""
    return _at(ts, _cycles(users, rounds))


def _cycles(users: int, rounds: int) -> Iterator[Command]:
    for r in range(rounds):
        for i in range(users):
            u = user_name(i)
            o = f"{u}-o{r}"
            yield command(OrderHold, f"{o}-hold", u, order_id=o, account="spot", asset="USDT", amount="100")
            yield command(FillSettle, f"{o}-fill", u, fill_id=f"{o}-f", order_id=o, account="spot",
                          pay_asset="USDT", pay_amount="60", receive_asset="BTC", receive_amount="0.001",
                          fee_amount="0.000001")
            yield command(OrderRelease, f"{o}-rel", u, order_id=o, amount=None)
            yield command(Transfer, f"{o}-t1", u, asset="USDT", amount="10", from_account="spot",
                          to_account="margin")
            yield command(Transfer, f"{o}-t2", u, asset="USDT", amount="4", from_account="margin",
                          to_account="spot")
            if r % 4 == 3:
                w = f"{u}-w{r}"
                yield command(WithdrawalRequest, f"{w}-req", u, withdrawal_id=w, account="spot", chain="ethereum",
                              asset="USDT", amount="20", fee="1", address=ADDR)


def confirmations(users: int, rounds: int, ts: int = 3) -> Iterator[Command]:
    return _at(ts, (command(WithdrawalConfirmed, f"{w}-done", user_name(i), withdrawal_id=w, tx_hash="0x1")
                    for r in range(3, rounds, 4) for i in range(users) for w in [f"{user_name(i)}-w{r}"]))


def steps(users: int, rounds: int) -> list[list[Command]]:
    """The workload in the order a client must wait between: accounts, deposits, trading, chain."""
    return [list(accounts(users)), list(deposits(users)), list(cycles(users, rounds)),
            list(confirmations(users, rounds))]


def commands(users: int, rounds: int) -> list[Command]:
    return [c for step in steps(users, rounds) for c in step]


def expected_balances(rounds: int) -> dict[tuple[str, str], tuple[int, int]]:
    """Per user, (account, asset) -> (available, frozen) after all steps (minor units)."""
    withdrawals = sum(1 for r in range(rounds) if r % 4 == 3)
    spot_usdt = 100_000 * 10**6 - rounds * (60 + 10 - 4) * 10**6 - withdrawals * 21 * 10**6
    return {
        ("spot", "USDT"): (spot_usdt, 0),
        ("margin", "USDT"): (rounds * 6 * 10**6, 0),
        ("spot", "BTC"): (rounds * (100_000 - 100), 0),
    }
