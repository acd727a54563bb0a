"""The lending pools' rates publisher (streams.rates): exchange-wide principal from the audit ledger in ClickHouse
(the core's own lines, landed by the sink's path into chDB), the treasury's supply from settings, and the
(borrowed, supplied) each pool's BorrowRate carries."""

from __future__ import annotations

from decimal import Decimal

import pytest

from processors.config import default_config
from processors.inputs import command
from processors.messages import Borrow, Repay, Transfer
from processors.money import parse_amount
from processors.rates import RATE_ONE
from sinks.store import ChdbStore
from streams import rates
from streams.config import Settings
from tests.unit.test_exactly_once import opened
from tests.unit.test_liquidation import USDT, Desk, long_btc
from tests.unit.test_sink_liquidation import _land

CFG = default_config()


def two_borrowers() -> list[Desk]:
    """u borrows 1,990 USDT (test_liquidation's account); v borrows 500 USDT and repays 120.5 of it."""
    v = Desk(opened("v"))
    for cmd in [command(Transfer, "in-v", "v", asset="USDT", amount="1000", from_account="spot", to_account="margin"),
                command(Borrow, "b-v", "v", account="margin", asset="USDT", amount="500"),
                command(Repay, "r-v", "v", account="margin", asset="USDT", amount="120.5")]:
        assert v.send(cmd) == "ACCEPTED", cmd
    return [long_btc(), v]


def test_each_pool_s_borrowed_is_the_exchange_s_principal_from_the_ledger(chdb_store: ChdbStore) -> None:
    u, v = two_borrowers()
    # v's repayment paid its first hour of interest (at the tests' 45% utilization), then principal
    first_hour = -(-500 * USDT * CFG.rate_models["USDT"].hourly(450, 1000) // RATE_ONE)
    assert first_hour == 1_142  # 1,990 USDT paid 4,544 for the same hour: 500 x 4,544 / 1,990 = 1,141.7, up
    left = v.state.balances[("margin", "USDT")][2]
    assert left == 500 * USDT - (120_500_000 - first_hour)
    _land(chdb_store, u.lines + v.lines, [])
    lent = rates.borrowed(chdb_store)
    total = 1_990 * USDT + left
    assert lent == {"USDT": Decimal(total) / USDT}
    supply = {"USDT": Decimal("50000000"), "BTC": Decimal("500"), "DOGE": Decimal("1")}
    pools = rates.pools(CFG, lent, supply)
    assert [(p.asset, p.borrowed, p.supplied) for p in pools] == [
        ("BTC", Decimal(0), Decimal(500)), ("USDT", lent["USDT"], Decimal(50_000_000))], \
        "a pool per rate model with a supply (DOGE has no model; USDC and ETH no supply), in name order"
    usdt = pools[1]
    borrowed_text, supplied_text = usdt.texts(6)
    assert (parse_amount(borrowed_text, 6), parse_amount(supplied_text, 6)) == (total, 50_000_000 * USDT)
    rate = CFG.rate_models["USDT"].hourly(total, 50_000_000 * USDT)
    assert rates.hourly_percent(CFG, usdt) == f"{Decimal(rate) * 100 / RATE_ONE:.6f}%"


def test_the_pool_supply_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSFLOW_POOL_SUPPLY", '{"USDT": "1000.5", "BTC": 2}')
    assert Settings().pool_supply == {"USDT": Decimal("1000.5"), "BTC": Decimal(2)}
    monkeypatch.setenv("POSFLOW_POOL_SUPPLY", '["USDT"]')
    with pytest.raises(ValueError, match="JSON object of asset to whole units"):
        Settings()
    monkeypatch.setenv("POSFLOW_POOL_SUPPLY", '{"USDT": "-1"}')
    with pytest.raises(ValueError, match=">= 0"):
        Settings()
    monkeypatch.delenv("POSFLOW_POOL_SUPPLY")
    assert Settings().pool_supply["USDT"] == Decimal(50_000_000)
