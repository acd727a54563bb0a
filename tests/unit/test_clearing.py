"""DESIGN §2.5: a fill is settled as one command per side, each against the per-asset clearing
account; across both sides the clearing account nets to zero in every asset."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from processors.config import default_config
from processors.engine import apply
from processors.inputs import command
from processors.ledger import CLEARING
from processors.messages import DepositConfirmed, FillSettle, LedgerLine, OpenAccount, OrderHold
from processors.money import format_amount
from processors.state import UserState
from tests.unit.core import Engine, ctx

CFG = default_config()
ADDR = "0x" + "ab" * 20


def funded(user: str, asset: str, amount: str, chain: str, address: str) -> UserState:
    state, _ = apply(None, command(OpenAccount, f"{user}-open", user, kyc_tier=1, region="DE"), ctx(CFG))
    deposit = command(DepositConfirmed, f"{chain}:0x{user}:0", user, chain=chain, tx_hash=f"0x{user}", log_index=0,
                      address=address, asset=asset, amount=amount, block_number=1, account="spot")
    state, out = apply(state, deposit, ctx(CFG))
    assert out.result.status == "ACCEPTED"
    return state


@given(btc_sats=st.integers(1, 10**8), price_cents=st.integers(1, 10**7), fee_bp=st.integers(0, 100))
def test_both_sides_of_a_fill_net_to_zero_in_clearing(btc_sats: int, price_cents: int, fee_bp: int) -> None:
    Engine.reset()  # each example is a fresh engine
    usdt_minor = btc_sats * price_cents // 10**4 + 1  # the quote side of the trade, in micro-USDT
    buyer = funded("buyer", "USDT", "1000000", "ethereum", ADDR)
    seller = funded("seller", "BTC", "2", "bitcoin", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq")
    usdt, btc = format_amount(usdt_minor, 6), format_amount(btc_sats, 8)
    for state, user, asset, amount in ((buyer, "buyer", "USDT", usdt), (seller, "seller", "BTC", btc)):
        _, out = apply(state, command(OrderHold, f"{user}-hold", user, order_id="o", account="spot", asset=asset,
                                      amount=amount), ctx(CFG))
        assert out.result.status == "ACCEPTED", out.result
    buyer_fee = format_amount(btc_sats * fee_bp // 10**4, 8)
    _, buy = apply(buyer, command(FillSettle, "fill-b", "buyer", fill_id="f", order_id="o", account="spot",
                                  pay_asset="USDT", pay_amount=usdt, receive_asset="BTC", receive_amount=btc,
                                  fee_amount=buyer_fee), ctx(CFG))
    _, sell = apply(seller, command(FillSettle, "fill-s", "seller", fill_id="f", order_id="o", account="spot",
                                    pay_asset="BTC", pay_amount=btc, receive_asset="USDT", receive_amount=usdt,
                                    fee_amount=format_amount(usdt_minor * fee_bp // 10**4, 6)), ctx(CFG))
    assert buy.result.status == sell.result.status == "ACCEPTED", (buy.result, sell.result)
    lines: list[LedgerLine] = [*buy.lines, *sell.lines]
    clearing: dict[str, int] = defaultdict(int)
    for line in lines:
        if line.account == CLEARING:
            clearing[line.asset] += line.amount
    assert clearing == {"USDT": 0, "BTC": 0}
    buyer.check()
    seller.check()
