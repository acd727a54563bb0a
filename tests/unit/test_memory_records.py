"""The engine's memory records and states survive the store exactly: amounts in minor units pass 64 bits (100 ETH is
10**20 wei), which a fast JSON library refuses to write and reads back as a float."""

from __future__ import annotations

import json

from processors.inputs import command
from processors.messages import DepositConfirmed, DepositReverted
from tests.unit.test_clock_tick import T0, USER, Partition, open_account, results

WEI_100_ETH = 10**20


def test_a_100_eth_deposit_is_stored_and_reversed_to_the_wei() -> None:
    part = Partition()
    dep = command(DepositConfirmed, "ethereum:0xbig:0", USER, chain="ethereum", tx_hash="0xbig", log_index=0,
                  address="0x" + "11" * 20, asset="ETH", amount="100", block_number=1, account="spot")
    first = part.step(open_account(T0), ("t.chain-events", T0, dep._replace(ts_ms=T0)))
    assert results(first)[dep.id]["status"] == "ACCEPTED"
    stored = json.loads(part.store.data[f"\x00m/{USER}\x00d/{dep.id}".encode()])
    assert stored[3][1] == WEI_100_ETH and isinstance(stored[3][1], int)
    credited = part.store.load(USER, 0)
    assert credited is not None and credited.balances[("spot", "ETH")][0] == WEI_100_ETH, "the state too"

    # a later step reads the record back from the store (not from the step that wrote it)
    revert = command(DepositReverted, "ethereum:0xbig:0/reverted", USER, deposit_id=dep.id, reason="reorg")
    second = part.step(("t.chain-events", T0 + 1, revert._replace(ts_ms=T0 + 1)))
    assert results(second)[revert.id]["status"] == "ACCEPTED"
    state = part.store.load(USER, 0)
    assert state is not None and ("spot", "ETH") not in state.balances, "all 10**20 wei taken back, none left"
