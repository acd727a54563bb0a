"""Stateful property test: random input sequences (valid, invalid, duplicated) against a reference
model written independently of the core. After every step: no balance negative, every asset's ledger
lines sum to zero across all accounts, ledger-derived balances equal the engine's, state equals model.

Margin: a BTC mark price that moves and ages, hours of engine time passing, loans and repayments in the
cross margin account; the model values the account with fractions (holdings down, debts up), charges simple
hourly interest on the principal from the hour it last booked, and pays interest before principal.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ParamSpec, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from processors.config import AssetRules, EngineConfig, default_config
from processors.context import Context
from processors.engine import apply
from processors.inputs import command
from processors.margin import parse_price
from processors.market import Market
from processors.messages import (
    Borrow,
    Command,
    DepositConfirmed,
    DepositReverted,
    FillSettle,
    LedgerLine,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Repay,
    Result,
    Transfer,
    WithdrawalApprove,
    WithdrawalBroadcast,
    WithdrawalCancel,
    WithdrawalConfirmed,
    WithdrawalFailed,
    WithdrawalRequest,
)
from processors.money import format_amount
from processors.rates import HOUR_MS, RATE_ONE
from processors.state import UserState
from tests.unit.core import Engine

BASE = default_config()
SCALE = {"USDT": 6, "BTC": 8}
UNIT = {a: 10**s for a, s in SCALE.items()}
# Low approval thresholds so that random withdrawals hit all three tiers.
CFG = EngineConfig(
    assets=BASE.assets,
    rules={
        # min deposit, min withdrawal, withdrawal fee, auto-approve below, two approvers from
        "USDT": AssetRules(2 * UNIT["USDT"], 10 * UNIT["USDT"], UNIT["USDT"], 20 * UNIT["USDT"], 40 * UNIT["USDT"]),
        "BTC": AssetRules(2 * UNIT["BTC"], UNIT["BTC"] // 100, UNIT["BTC"] // 10**4, UNIT["BTC"] // 5, 40_000_000),
    },
    chains=BASE.chains,
    # few closed orders and fill ids kept in the state: the model's nine order ids are let go to the memory
    closed_orders_kept=2,
    fills_per_hold=1,
    rate_models=BASE.rate_models,
)
# The pools' hourly rates: USDT 45% lent out (2% a year), BTC 10% (of its 45% kink at 4%)
RATES = {"USDT": BASE.rate_models["USDT"].hourly(45, 100), "BTC": BASE.rate_models["BTC"].hourly(10, 100)}
BTC_PRICES = ("20000", "45000.5", "60000", "150000")
USERS = ("alice", "bob", "carol")
ACCOUNTS = ("spot", "margin")
ADDRESS = "0x" + "ab" * 20
CHAIN_FOR = {"USDT": "ethereum", "BTC": "bitcoin"}
ADDRESS_FOR = {"USDT": ADDRESS, "BTC": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"}
_Body = TypeVar("_Body", bound=Mapping[str, Any])
_Fields = ParamSpec("_Fields")


@dataclass
class ModelUser:
    bal: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    holds: dict[str, list[object]] = field(default_factory=dict)  # oid -> [account, asset, remaining]
    wds: dict[str, dict[str, object]] = field(default_factory=dict)
    deps: dict[str, list[object]] = field(default_factory=dict)  # id -> [account, asset, amount, status]
    parked: dict[str, list[str]] = field(default_factory=dict)  # withdrawal id -> chain steps waiting for it
    frozen: bool = False
    closed: set[str] = field(default_factory=set)  # order ids whose hold closed: used, and they take no fill
    # (margin account, asset) -> [interest booked and unpaid, the hour through which it is booked]
    loans: dict[tuple[str, str], list[int]] = field(default_factory=dict)


STEP_KIND = {"cancel": WithdrawalCancel.__name__, "broadcast": WithdrawalBroadcast.__name__,
             "confirm": WithdrawalConfirmed.__name__, "fail": WithdrawalFailed.__name__}
STEP_ALLOWED = {"cancel": ("pending_approval", "approved"), "broadcast": ("approved",),
                "confirm": ("approved", "broadcast"), "fail": ("approved", "broadcast")}



def amount_text(asset: str, minor: int) -> str:
    return format_amount(minor, SCALE[asset])


users = st.sampled_from(USERS)
assets = st.sampled_from(sorted(SCALE))
accounts = st.sampled_from(ACCOUNTS)
units = st.integers(min_value=1, max_value=250)
margin_mostly = st.sampled_from(["margin", "margin", "margin", "spot"])


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        Engine.reset()  # hypothesis runs many machines in one test: each starts with an empty engine memory
        self.states: dict[str, UserState | None] = dict.fromkeys(USERS)
        self.model: dict[str, ModelUser | None] = dict.fromkeys(USERS)
        self.lines: dict[str, LedgerLine] = {}
        self.results: dict[str, Result] = {}
        self.sent: list[Command] = []
        # chain events for a user whose account is not open yet: they wait for it, in arrival order
        self.waiting: dict[str, list[tuple[str, object]]] = {u: [] for u in USERS}
        self.n = 0
        # the partition's market, as the engine keeps it, and the model's own view of it
        self.now = Engine.now_ms
        self.market = Market()
        for asset, rate in RATES.items():
            self.market.set_rate(asset, rate, self.now)
        self.start_hour = self.now // HOUR_MS
        self.btc: tuple[Fraction, int] | None = None  # USDT per BTC, and when it was priced

    def ctx(self) -> Context:
        return Context(self.now, CFG, Engine.memory, market=self.market)

    # -- plumbing ---------------------------------------------------------------------------------
    def send(self, body: Callable[_Fields, _Body], user: str, /, *args: _Fields.args,
             **fields: _Fields.kwargs) -> Result:
        """An input with the next test id."""
        return self.send_input(command(body, f"c{self.n + 1}", user, *args, **fields))

    def send_input(self, cmd: Command) -> Result:
        self.n += 1
        cmd = cmd._replace(ts_ms=self.n)
        state, outcome = apply(self.states[cmd.user_id], cmd, self.ctx())
        self.states[cmd.user_id] = state
        assert cmd.id not in self.results, "test ids are unique"
        self.results[cmd.id] = outcome.result
        assert outcome.result.ledger_lines == len(outcome.lines)
        for line in outcome.lines:
            assert line.id not in self.lines, f"ledger id {line.id} reused"
            self.lines[line.id] = line
        self.sent.append(cmd)
        return outcome.result

    def expect(self, result: Result, accepted: bool, reason: str | None = None) -> bool:
        assert (result.status == "ACCEPTED") == accepted, (result, accepted)
        if reason is not None:
            assert result.reason == reason, result
        return accepted

    def user(self, name: str) -> ModelUser | None:
        return self.model[name]

    # -- rules ------------------------------------------------------------------------------------
    @initialize()
    def open_two(self) -> None:
        """alice and bob start open, with USDT in their margin accounts and a BTC price; carol stays unknown
        until a rule opens her."""
        for user in ("alice", "bob"):
            self.open_account(user)
            self.deposit(user, "USDT", "margin", 200 + len(user), 31 + len(user))  # 100-102 USDT
        self.btc_price(2)

    @precondition(lambda self: any(m is None for m in self.model.values()))
    @rule(user=users)
    def open_account(self, user: str) -> None:
        r = self.send(OpenAccount, user, kyc_tier=1, region="EU")
        if self.expect(r, self.model[user] is None, None if self.model[user] is None else "USER_EXISTS"):
            m = self.model[user] = ModelUser()
            for what, data in self.waiting[user]:  # applied in arrival order once the account is open
                if what == "deposit":
                    assert isinstance(data, tuple)
                    self._credit(m, *data)
                else:
                    m.parked.setdefault(str(data), []).append(what)
            self.waiting[user] = []

    @rule(user=users, asset=assets, account=accounts, minor=st.integers(1, 300), tx=st.integers(0, 30))
    def deposit(self, user: str, asset: str, account: str, minor: int, tx: int) -> None:
        amount = minor * UNIT[asset] // 2  # minor < 4: below the minimum deposit
        chain = CHAIN_FOR[asset]
        dep_id = f"{chain}:0x{tx:064x}:{SCALE[asset]}"
        if any(c.id == dep_id for c in self.sent):
            return  # the same chain event again is the `replay` rule's job
        r = self.send_input(command(DepositConfirmed, dep_id, user, chain=chain, tx_hash=f"0x{tx:064x}",
                                    log_index=SCALE[asset], address=ADDRESS_FOR[asset], asset=asset,
                                    amount=amount_text(asset, amount), block_number=tx, account=account))
        m = self.user(user)
        if m is None:  # the chain's facts wait for the account, up to a bound
            room = len(self.waiting[user]) < CFG.parked_max
            if self.expect(r, room, "PARKED" if room else "UNKNOWN_USER"):
                self.waiting[user].append(("deposit", (dep_id, account, asset, amount)))
            return
        self.expect(r, True)
        if amount < CFG.rules[asset].min_deposit:
            assert r.reason == "BELOW_MINIMUM"
        self._credit(m, dep_id, account, asset, amount)

    def _credit(self, m: ModelUser, dep_id: str, account: str, asset: str, amount: int) -> None:
        if amount < CFG.rules[asset].min_deposit:
            m.deps[dep_id] = [account, asset, amount, "below_minimum"]
        else:
            m.bal[(account, asset, "available")] += amount
            m.deps[dep_id] = [account, asset, amount, "credited"]

    @rule(user=users, pick=st.integers(0, 1000))
    def revert_deposit(self, user: str, pick: int) -> None:
        m = self.user(user)
        if m is None or not m.deps or pick % 4:  # reorgs are rare; frozen accounts block most rules
            return
        dep_id = sorted(m.deps)[pick % len(m.deps)]
        account, asset, amount, status = m.deps[dep_id]
        r = self.send(DepositReverted, user, deposit_id=dep_id, reason="reorg")
        self.expect(r, True)
        m.deps[dep_id][3] = "reverted"
        if status == "credited":
            assert isinstance(amount, int) and isinstance(account, str) and isinstance(asset, str)
            key = (account, asset, "available")
            taken = min(m.bal[key], amount)
            m.bal[key] -= taken
            if amount > taken:
                m.bal[(account, asset, "borrowed")] += amount - taken
                m.frozen = True
                assert r.reason == "REVERSAL_SHORTFALL"

    @rule(user=users, asset=assets, account=accounts, u=units, oid=st.integers(0, 8))
    def hold(self, user: str, asset: str, account: str, u: int, oid: int) -> None:
        amount = u * UNIT[asset] // 10
        r = self.send(OrderHold, user, order_id=f"o{oid}", account=account, asset=asset,
                      amount=amount_text(asset, amount))
        m = self.user(user)
        ok = (m is not None and not m.frozen and f"o{oid}" not in m.holds and f"o{oid}" not in m.closed
              and m.bal[(account, asset, "available")] >= amount)
        if self.expect(r, ok):
            assert m is not None
            m.bal[(account, asset, "available")] -= amount
            m.bal[(account, asset, "frozen")] += amount
            m.holds[f"o{oid}"] = [account, asset, amount]

    @rule(user=users, pick=st.integers(0, 100), part=st.one_of(st.none(), st.integers(1, 100)))
    def release(self, user: str, pick: int, part: int | None) -> None:
        user, oid = self._pick(user, pick, "o")
        m = self.user(user)
        held = m.holds.get(oid) if m else None
        asset = str(held[1]) if held else "USDT"
        amount = None if part is None else part * UNIT[asset] // 100
        r = self.send(OrderRelease, user, order_id=oid, amount=None if amount is None else amount_text(asset, amount))
        if held is None:
            self.expect(r, False, self._no_hold(m, oid))
            return
        assert m is not None
        account, _, remaining = held
        assert isinstance(remaining, int) and isinstance(account, str)
        take = remaining if amount is None else amount
        if self.expect(r, take <= remaining):
            self._reduce(m, oid, take)
            m.bal[(account, asset, "available")] += take

    @rule(user=users, pick=st.integers(0, 100), part=st.integers(1, 120), price=st.integers(1, 50),
          fee_pct=st.integers(0, 120))
    def fill(self, user: str, pick: int, part: int, price: int, fee_pct: int) -> None:
        """One side of a trade: this user's order pays from its hold and receives the other asset."""
        user, oid = self._pick(user, pick, "o")
        m = self.user(user)
        held = m.holds.get(oid) if m else None
        if held is None or m is None:
            r = self.send(FillSettle, user, fill_id="f", order_id=oid, account="spot", pay_asset="USDT",
                          pay_amount="1", receive_asset="BTC", receive_amount="0.001", fee_amount="0")
            self.expect(r, False, self._no_hold(m, oid))
            return
        account, pay_asset, remaining = held
        assert isinstance(account, str) and isinstance(pay_asset, str) and isinstance(remaining, int)
        recv_asset = "BTC" if pay_asset == "USDT" else "USDT"
        pay = max(1, part * remaining // 100)  # part > 100: more than the hold has left
        recv = price * UNIT[recv_asset] // 100
        fee = recv * fee_pct // 100
        r = self.send(FillSettle, user, fill_id=f"f{self.n}", order_id=oid, account=account, pay_asset=pay_asset,
                      pay_amount=amount_text(pay_asset, pay), receive_asset=recv_asset,
                      receive_amount=amount_text(recv_asset, recv), fee_amount=amount_text(recv_asset, fee))
        if self.expect(r, pay <= remaining and fee <= recv):
            self._reduce(m, oid, pay)
            m.bal[(account, recv_asset, "available")] += recv - fee

    @rule(user=users, asset=assets, src=accounts, dst=accounts, u=units)
    def transfer(self, user: str, asset: str, src: str, dst: str, u: int) -> None:
        amount = u * UNIT[asset] // 10
        r = self.send(Transfer, user, asset=asset, amount=amount_text(asset, amount), from_account=src, to_account=dst)
        m = self.user(user)
        ok = m is not None and not m.frozen and src != dst and m.bal[(src, asset, "available")] >= amount
        if ok and m is not None and src == "margin" and m.loans:
            # an indebted margin account keeps a level above 2 (transfer out), valued at fresh prices only
            refusal = self._out_refusal(m, asset, amount)
            if refusal is not None:
                self.expect(r, False, refusal)
                return
        if self.expect(r, ok):
            assert m is not None
            m.bal[(src, asset, "available")] -= amount
            m.bal[(dst, asset, "available")] += amount

    # -- margin -----------------------------------------------------------------------------------
    @rule(pick=st.integers(0, 3))
    def btc_price(self, pick: int) -> None:
        self.market.set_price("BTC", parse_price(BTC_PRICES[pick]), self.now, self.now)
        self.btc = (Fraction(BTC_PRICES[pick]), self.now)

    @rule(minutes=st.sampled_from([1, 20, 60, 150]))
    def time_passes(self, minutes: int) -> None:
        """Engine time moves on: prices age (30 s make one stale), full hours charge interest."""
        self.now += minutes * 60_000

    def _hour(self) -> int:
        return self.now // HOUR_MS

    def _fresh_btc(self) -> Fraction | None:
        if self.btc is None or self.now - self.btc[1] > CFG.price_max_age_ms:
            return None
        return self.btc[0]

    def _value(self, asset: str, minor: int, up: bool) -> int | None:
        """USDT minor units (scale 6) of `minor` units of `asset`; None without a fresh price."""
        if asset == "USDT":
            return minor
        price = self._fresh_btc()
        if price is None:
            return None
        exact = Fraction(minor * UNIT["USDT"], UNIT["BTC"]) * price
        return math.ceil(exact) if up else math.floor(exact)

    def _accrued(self, m: ModelUser, account: str, asset: str) -> int:
        """Interest since the loan last booked: the principal times each full hour's rate, rounded up."""
        hours = self._hour() - m.loans[(account, asset)][1]
        return math.ceil(Fraction(m.bal[(account, asset, "borrowed")] * RATES[asset] * hours, RATE_ONE))

    def _level(self, m: ModelUser, account: str) -> tuple[int, int] | None:
        """(assets, liabilities) of the account; None when an asset it holds or owes has no fresh price."""
        assets = liabilities = 0
        for asset in SCALE:
            held = m.bal[(account, asset, "available")] + m.bal[(account, asset, "frozen")]
            owed = m.bal[(account, asset, "borrowed")]
            if (account, asset) in m.loans:
                owed += m.loans[(account, asset)][0] + self._accrued(m, account, asset)
            if not (held or owed):
                continue
            up, down = self._value(asset, owed, True), self._value(asset, held, False)
            if up is None or down is None:
                return None
            assets, liabilities = assets + down, liabilities + up
        return assets, liabilities

    def _out_refusal(self, m: ModelUser, asset: str, amount: int) -> str | None:
        level, out = self._level(m, "margin"), self._value(asset, amount, True)
        if level is None or out is None:
            return "PRICE_UNAVAILABLE"
        assets, liabilities = level[0] - out, level[1]
        return "MARGIN_LEVEL_TOO_LOW" if assets < 0 or Fraction(assets, liabilities) <= 2 else None

    def _book(self, m: ModelUser, account: str, asset: str) -> None:
        if (account, asset) in m.loans:
            m.loans[(account, asset)][0] += self._accrued(m, account, asset)
            m.loans[(account, asset)][1] = self._hour()

    @rule(user=users, asset=assets, account=margin_mostly, u=st.integers(1, 400))
    def borrow(self, user: str, asset: str, account: str, u: int) -> None:
        amount = u * UNIT[asset] // (2 if asset == "USDT" else 10_000)  # up to 200 USDT, 0.04 BTC
        r = self.send(Borrow, user, account=account, asset=asset, amount=amount_text(asset, amount))
        m = self.user(user)
        if m is None:
            self.expect(r, False, "UNKNOWN_USER")
            return
        if m.frozen or account != "margin":
            self.expect(r, False, "ACCOUNT_FROZEN" if m.frozen else "NOT_A_MARGIN_ACCOUNT")
            return
        first_hour = math.ceil(Fraction(amount * RATES[asset], RATE_ONE))
        level, got, owe = self._level(m, account), self._value(asset, amount, False), self._value(
            asset, amount + first_hour, True)
        if level is None or got is None or owe is None:
            self.expect(r, False, "PRICE_UNAVAILABLE")
            return
        if Fraction(level[0] + got, level[1] + owe) < Fraction(3, 2):  # the 3x tier's borrow line
            self.expect(r, False, "MARGIN_LEVEL_TOO_LOW")
            return
        self.expect(r, True)
        self._book(m, account, asset)
        loan = m.loans.setdefault((account, asset), [0, self._hour()])
        loan[0] += first_hour
        m.bal[(account, asset, "available")] += amount
        m.bal[(account, asset, "borrowed")] += amount

    @rule(user=users, asset=assets, account=margin_mostly, u=st.integers(1, 400), pick=st.integers(0, 100))
    def repay(self, user: str, asset: str, account: str, u: int, pick: int) -> None:
        owing = sorted((name, a) for name, m_ in self.model.items() if m_ for (_, a) in m_.loans)
        if owing and pick % 5 and account == "margin":  # mostly a loan that exists
            user, asset = owing[pick % len(owing)]
        amount = u * UNIT[asset] // (10 if asset == "USDT" else 10_000)
        r = self.send(Repay, user, account=account, asset=asset, amount=amount_text(asset, amount))
        m = self.user(user)
        if m is None or account != "margin" or (account, asset) not in m.loans:
            self.expect(r, False, "UNKNOWN_USER" if m is None else "NOT_A_MARGIN_ACCOUNT" if account != "margin"
                        else "NOTHING_TO_REPAY")
            return
        owed_interest = m.loans[(account, asset)][0] + self._accrued(m, account, asset)
        principal = m.bal[(account, asset, "borrowed")]
        pay = min(amount, owed_interest + principal)
        if not self.expect(r, m.bal[(account, asset, "available")] >= pay, None):
            assert r.reason == "INSUFFICIENT_FUNDS", r
            return
        self._book(m, account, asset)
        on_interest = min(pay, owed_interest)
        m.loans[(account, asset)][0] -= on_interest
        m.bal[(account, asset, "available")] -= pay
        m.bal[(account, asset, "borrowed")] -= pay - on_interest
        if not m.bal[(account, asset, "borrowed")]:
            assert not m.loans[(account, asset)][0], "interest is paid first"
            del m.loans[(account, asset)]

    @rule(user=users, u=units)
    def transfer_out_of_margin(self, user: str, u: int) -> None:
        self.transfer(user, "USDT", "margin", "spot", u * 2)  # 0.2 to 50 USDT

    @rule(user=users, asset=assets, u=st.integers(1, 60), fee_units=st.integers(0, 3), wid=st.integers(0, 30))
    def withdraw(self, user: str, asset: str, u: int, fee_units: int, wid: int) -> None:
        amount = u * UNIT[asset] // (1 if asset == "USDT" else 100)
        fee = fee_units * CFG.rules[asset].withdrawal_fee
        r = self.send(WithdrawalRequest, user, withdrawal_id=f"w{wid}", account="spot", chain=CHAIN_FOR[asset],
                      asset=asset, amount=amount_text(asset, amount), fee=amount_text(asset, fee),
                      address=ADDRESS_FOR[asset])
        m = self.user(user)
        rules = CFG.rules[asset]
        ok = (m is not None and not m.frozen and f"w{wid}" not in m.wds and amount >= rules.min_withdrawal
              and fee >= rules.withdrawal_fee and m.bal[("spot", asset, "available")] >= amount + fee)
        if self.expect(r, ok):
            assert m is not None
            need = 0 if amount < rules.auto_approve_below else 1 if amount < rules.two_approvers_from else 2
            m.bal[("spot", asset, "available")] -= amount + fee
            m.bal[("spot", asset, "frozen")] += amount + fee
            m.wds[f"w{wid}"] = {"asset": asset, "total": amount + fee, "need": need, "approvers": set(),
                                "status": "approved" if need == 0 else "pending_approval"}
            self._release(m, f"w{wid}")

    @staticmethod
    def _no_hold(m: ModelUser | None, oid: str) -> str:
        return "UNKNOWN_USER" if m is None else "ORDER_CLOSED" if oid in m.closed else "UNKNOWN_HOLD"

    def _pick(self, user: str, pick: int, what: str) -> tuple[str, str]:
        """Mostly an existing hold / withdrawal of any user; sometimes an id that does not exist."""
        known = sorted((u, k) for u, m in self.model.items() if m for k in (m.holds if what == "o" else m.wds))
        if known and pick % 5:
            return known[pick % len(known)]
        return user, f"{what}{pick % 7}"

    @rule(user=users, pick=st.integers(0, 100), approver=st.sampled_from(["ops1", "ops2"]))
    def approve(self, user: str, pick: int, approver: str) -> None:
        user, wid = self._pick(user, pick, "w")
        r = self.send(WithdrawalApprove, user, withdrawal_id=wid, approver=approver)
        m = self.user(user)
        w = m.wds.get(wid) if m else None
        approvers = w["approvers"] if w else set()
        assert isinstance(approvers, set)
        ok = (w is not None and m is not None and not m.frozen and w["status"] == "pending_approval"
              and approver not in approvers)
        if self.expect(r, ok):
            assert w is not None
            approvers.add(approver)
            if len(approvers) >= w["need"]:  # type: ignore[operator]
                w["status"] = "approved"
                assert m is not None
                self._release(m, wid)

    @rule(user=users, pick=st.integers(0, 100), what=st.sampled_from(["cancel", "broadcast", "confirm", "fail"]))
    def withdrawal_step(self, user: str, pick: int, what: str) -> None:
        user, wid = self._pick(user, pick, "w")
        tx_hash = "0x" + "cd" * 32
        if what == "cancel":
            r = self.send(WithdrawalCancel, user, withdrawal_id=wid, reason="user")
        elif what == "fail":
            r = self.send(WithdrawalFailed, user, withdrawal_id=wid, reason="dropped")
        elif what == "broadcast":
            r = self.send(WithdrawalBroadcast, user, withdrawal_id=wid, tx_hash=tx_hash)
        else:
            r = self.send(WithdrawalConfirmed, user, withdrawal_id=wid, tx_hash=tx_hash)
        m = self.user(user)
        if m is None and what != "cancel":  # a chain event for an account not open yet waits for it
            room = len(self.waiting[user]) < CFG.parked_max
            if self.expect(r, room, "PARKED" if room else "UNKNOWN_USER"):
                self.waiting[user].append((what, wid))
            return
        w = m.wds.get(wid) if m else None
        if m is not None and w is None and what != "cancel":
            # a chain event ahead of its withdrawal waits for it, up to a bound
            room = sum(len(v) for v in m.parked.values()) < CFG.parked_max
            if self.expect(r, room, "PARKED" if room else "UNKNOWN_WITHDRAWAL"):
                m.parked.setdefault(wid, []).append(what)
            return
        if not self.expect(r, w is not None and w["status"] in STEP_ALLOWED[what]):
            return
        assert m is not None and w is not None
        self._step(m, w, what)

    def _step(self, m: ModelUser, w: dict[str, object], what: str) -> None:
        asset, total = str(w["asset"]), w["total"]
        assert isinstance(total, int)
        if what in ("cancel", "fail"):
            m.bal[("spot", asset, "frozen")] -= total
            m.bal[("spot", asset, "available")] += total
        elif what == "confirm":
            m.bal[("spot", asset, "frozen")] -= total
        w["status"] = {"cancel": "cancelled", "broadcast": "broadcast", "confirm": "completed", "fail": "failed"}[what]

    def _release(self, m: ModelUser, wid: str) -> None:
        """Parked chain steps apply in arrival order once the withdrawal allows them."""
        waiting = m.parked.get(wid, [])
        while waiting and m.wds[wid]["status"] in STEP_ALLOWED[waiting[0]]:
            self._step(m, m.wds[wid], waiting.pop(0))
        if not waiting:
            m.parked.pop(wid, None)

    @rule(user=users, bad=st.sampled_from(["1.0000001", "-5", "0", "abc", "1e5", "9" * 39, "", " 1", "1.", "１"]))
    def invalid_amount(self, user: str, bad: str) -> None:
        before = copy.deepcopy(self.states[user])
        r = self.send(Transfer, user, asset="USDT", amount=bad, from_account="spot", to_account="margin")
        self.expect(r, False)
        m = self.model[user]
        if m is not None and not m.frozen:
            assert r.reason in {"BAD_AMOUNT", "BAD_AMOUNT_SCALE", "NON_POSITIVE_AMOUNT", "AMOUNT_TOO_LARGE"}, r
            after = self.states[user]
            assert after is not None and before is not None
            assert after == before, "a refused input changed the state"

    @rule(pick=st.integers(0, 10_000))
    def replay(self, pick: int) -> None:
        """Redelivery: the same input again changes nothing and answers with the identical result."""
        if not self.sent:
            return
        cmd = self.sent[pick % len(self.sent)]
        first = self.results[cmd.id]
        if first.status != "ACCEPTED":
            return  # a refusal is not remembered: the same input is decided again on the state it meets
        m = self.model[cmd.user_id]
        if cmd.kind == "DepositConfirmed" and m is not None and m.deps.get(cmd.id, [None] * 4)[3] == "reverted":
            return  # the confirmation of a reverted deposit again is its re-inclusion: credited again (test_rejections)
        before = copy.deepcopy(self.states[cmd.user_id])
        state, outcome = apply(self.states[cmd.user_id], cmd, self.ctx())
        assert state == before, "a duplicate changed the state"
        assert outcome.lines == () and outcome.events == ()
        if cmd.kind == "DepositConfirmed":  # known by its deposit's record: answered with what became of it
            assert outcome.result.status == "ACCEPTED"
        else:
            assert outcome.result == first

    # -- helpers and invariants -------------------------------------------------------------------
    def _reduce(self, m: ModelUser, oid: str, amount: int) -> None:
        account, asset, remaining = m.holds[oid]
        assert isinstance(remaining, int)
        m.bal[(str(account), str(asset), "frozen")] -= amount
        if remaining == amount:
            del m.holds[oid]
            m.closed.add(oid)
        else:
            m.holds[oid][2] = remaining - amount

    @invariant()
    def ledger_balances_and_matches_state(self) -> None:
        per_asset: dict[str, int] = defaultdict(int)
        derived: dict[tuple[str, str, str, str], int] = defaultdict(int)
        for line in self.lines.values():
            per_asset[line.asset] += line.amount
            if line.user_id:
                derived[(line.user_id, line.account, line.asset, line.bucket)] += line.amount
        assert all(v == 0 for v in per_asset.values()), f"ledger unbalanced: {dict(per_asset)}"
        for user in USERS:
            state, m = self.states[user], self.model[user]
            assert (state is None or not state.opened) == (m is None)
            if state is None or m is None:
                continue
            state.check()
            assert (state.status == "frozen") == m.frozen
            got = {}
            for (account, asset), (available, frozen, borrowed) in state.balances.items():
                for bucket, value in (("available", available), ("frozen", frozen), ("borrowed", borrowed)):
                    if value:
                        got[(account, asset, bucket)] = value
                        sign = -1 if bucket == "borrowed" else 1
                        assert derived[(user, account, asset, bucket)] == sign * value, (user, account, asset, bucket)
            assert got == {k: v for k, v in m.bal.items() if v}, f"{user}: engine {got} != model {dict(m.bal)}"
            assert {k: h.remaining for k, h in state.holds.items()} == {k: h[2] for k, h in m.holds.items()}
            assert {k: w.status for k, w in state.withdrawals.items()} == {k: w["status"] for k, w in m.wds.items()}
            assert {k: [e[2] for e in v] for k, v in state.parked.items()} == {
                k: [STEP_KIND[s] for s in v] for k, v in m.parked.items()}
            assert {k: loan.interest for k, loan in state.loans.items()} == {k: v[0] for k, v in m.loans.items()}
            for (account, asset), loan in state.loans.items():
                assert derived[(user, account, asset, "interest")] == -loan.interest, (user, account, asset)
            assert UserState.from_bytes(state.to_bytes()) == state


EngineMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEngine = EngineMachine.TestCase
