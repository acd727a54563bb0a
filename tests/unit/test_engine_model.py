"""Stateful property test: random input sequences (valid, invalid, duplicated) against a reference
model written independently of the core. After every step: no balance negative, every asset's ledger
lines sum to zero across all accounts, ledger-derived balances equal the engine's, state equals model.

Margin: a BTC mark price that moves and ages, hours of engine time passing, loans and repayments in the
cross margin account; the model values the account with fractions (holdings down, debts up), charges simple
hourly interest on the principal from the hour it last booked, and pays interest before principal.

Liquidation (processors.liquidation's docstring is the spec the model is written from): each price move touches
the watched users (processors.engine.tick, as the worker does); every `Liquidate` the core asks for is kept and
applied later by a rule (re-checked then: the model predicts NOT_LIQUIDATABLE, PRICE_UNAVAILABLE,
ALREADY_LIQUIDATING, or the start); the model locks the account, releases its holds, sizes each part's orders
itself and compares them with the LiquidationOrder events, and distributes each fill's proceeds (debt, fee,
account), completing, covering a shortfall from the insurance fund, or waiting for the cooldown. Checked besides:
a Liquidate is asked for exactly when the model finds the account in the liquidation band, and the insurance
fund's lines are clearance fees in, and shortfalls out only where the account had nothing left to sell.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ParamSpec, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from processors import monitor
from processors.config import AssetRules, EngineConfig, default_config
from processors.context import Context
from processors.engine import apply, tick
from processors.inputs import command
from processors.ledger import INSURANCE_FUND, LIQUIDATION, LIQUIDATION_FILL
from processors.margin import parse_price
from processors.market import Market
from processors.messages import (
    Borrow,
    Command,
    DepositConfirmed,
    DepositReverted,
    Event,
    FillSettle,
    LedgerLine,
    LiquidationFill,
    LiquidationOrder,
    MarginEvent,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Outcome,
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
# Liquidation, the model's own figures (the spec's): a 2% clearance fee on the proceeds, orders sized for 5%
# slippage beyond it; parts of at most 150 USDT (the model's accounts owe up to a few hundred: several parts),
# 2 s of cooldown, at most 3 fills an order (the third partial one is refused TOO_MANY_FILLS).
LIQ_FEE = Fraction(2, 100)
LIQ_SLIPPAGE = Fraction(5, 100)
PART_VALUE = 150 * UNIT["USDT"]
COOLDOWN_MS = 2_000
FILLS_MAX = 3
LIQUIDATE_AT = Fraction(11, 10)  # the cross 3x tier's liquidation line
STARTED, COMPLETED = "LiquidationStarted", "LiquidationCompleted"
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
    liquidation_fee=LIQ_FEE,
    liquidation_slippage=LIQ_SLIPPAGE,
    liquidation_part_value=PART_VALUE,
    liquidation_cooldown_ms=COOLDOWN_MS,
    liquidation_fills_max=FILLS_MAX,
)
# The pools' hourly rates: USDT 45% lent out (2% a year), BTC 10% (of its 45% kink at 4%)
RATES = {"USDT": BASE.rate_models["USDT"].hourly(45, 100), "BTC": BASE.rate_models["BTC"].hourly(10, 100)}
# A crash to 0.0005 makes BTC under 200,000 sat dust (worth less than a minor unit of USDT): never sold.
BTC_PRICES = ("20000", "45000.5", "52000", "60000", "150000", "0.0005")
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
    liq: dict[str, ModelLiquidation] = field(default_factory=dict)  # margin account -> its liquidation under way


@dataclass
class ModelOrder:
    """An open liquidation order: sells `sell` (frozen in the account) for `buy`."""

    sell: str
    buy: str
    remaining: int
    fills: list[str] = field(default_factory=list)


@dataclass
class ModelLiquidation:
    id: str  # its Liquidate input's
    part: int = 0
    due: int = 0  # engine time from which the next part starts (0: a part's orders are open)
    orders: dict[str, ModelOrder] = field(default_factory=dict)


STEP_KIND = {"cancel": WithdrawalCancel.__name__, "broadcast": WithdrawalBroadcast.__name__,
             "confirm": WithdrawalConfirmed.__name__, "fail": WithdrawalFailed.__name__}
STEP_ALLOWED = {"cancel": ("pending_approval", "approved"), "broadcast": ("approved",),
                "confirm": ("approved", "broadcast"), "fail": ("approved", "broadcast")}



def amount_text(asset: str, minor: int) -> str:
    return format_amount(minor, SCALE[asset])


def other(asset: str) -> str:
    return "BTC" if asset == "USDT" else "USDT"


def in_band(level: tuple[int, int]) -> bool:
    """At or below the liquidation line (never without liabilities)."""
    assets, liabilities = level
    return liabilities > 0 and assets <= LIQUIDATE_AT * liabilities


def liquidation_events(outcome: Outcome) -> list[tuple[object, ...]]:
    """An outcome's liquidation events, as the model writes what it expects: each order placed, each start and
    completion (with the shortfall's value)."""
    out: list[tuple[object, ...]] = []
    for e in outcome.events:
        if isinstance(e, LiquidationOrder):
            out.append(("order", e.id, e.ts_ms, e.user_id, e.account, e.sell_asset, e.sell_amount, e.buy_asset,
                        Fraction(e.mark_price), e.part))
        elif isinstance(e, MarginEvent) and e.kind in (STARTED, COMPLETED):
            out.append((e.kind, e.user_id, e.account, e.shortfall_value))
    return out


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
        self.btc_text = ""  # as the price source wrote it
        # Liquidation: every Liquidate input the core asked for, by (user, id), those not applied yet in order,
        # and the first answer of each accepted one; every liquidation order placed (filled ones too)
        self.liq_asked: dict[tuple[str, str], Command] = {}
        self.liq_pending: list[tuple[str, str]] = []
        self.liq_accepted: dict[tuple[str, str], Result] = {}
        self.liq_orders: list[tuple[str, str]] = []
        # what the model expects of the liquidation events of the input or touch being applied
        self.liq_want: list[tuple[object, ...]] = []
        # the insurance fund per asset: clearance fees in, shortfalls paid out (the model's totals)
        self.fund_fees: dict[str, int] = defaultdict(int)
        self.fund_paid: dict[str, int] = defaultdict(int)
        # user -> the events of the latest valuation of the user's margin accounts in this step (an accepted input,
        # a touch), checked against the model by an invariant: a Liquidate is asked for exactly when it is due
        self.valued: dict[str, tuple[Event, ...]] = {}
        self.last_outcome = Outcome(Result("", 0, "", "", "ACCEPTED", None, "", 0))

    def ctx(self) -> Context:
        return Context(self.now, CFG, Engine.memory, market=self.market)

    # -- plumbing ---------------------------------------------------------------------------------
    def send(self, body: Callable[_Fields, _Body], user: str, /, *args: _Fields.args,
             **fields: _Fields.kwargs) -> Result:
        """An input with the next test id."""
        return self.send_input(command(body, f"c{self.n + 1}", user, *args, **fields))

    def send_input(self, cmd: Command) -> Result:
        assert cmd.id not in self.results, "test ids are unique"
        outcome = self.apply_input(cmd)
        cmd = self.sent[-1]
        self.results[cmd.id] = outcome.result
        if cmd.kind != LiquidationFill.__name__:
            assert not liquidation_events(outcome), f"{cmd.kind} made liquidation events: {outcome.events}"
        return outcome.result

    def apply_input(self, cmd: Command) -> Outcome:
        """A new input (not a resend of an accepted one): applied at engine time now, its outcome taken in."""
        self.n += 1
        cmd = cmd._replace(ts_ms=self.n)
        state, outcome = apply(self.states[cmd.user_id], cmd, self.ctx())
        self.states[cmd.user_id] = state
        self.last_outcome = outcome
        if cmd.kind != "Liquidate":  # their ids are the core's, not unique across users: the liquidate rule's
            self.sent.append(cmd)
        self.took(cmd.user_id, outcome, valued=outcome.result.status == "ACCEPTED")
        return outcome

    def took(self, user: str, outcome: Outcome, valued: bool) -> None:
        """An outcome's lines into the ledger (each id once, the insurance fund's checked), the Liquidate inputs it
        asks for kept; `valued`: the user's margin accounts were valued after it (an accepted input, a touch)."""
        assert outcome.result.ledger_lines == len(outcome.lines)
        for line in outcome.lines:
            assert line.id not in self.lines, f"ledger id {line.id} reused"
            self.lines[line.id] = line
        self._check_fund_lines(user, outcome.lines)
        state = self.states[user]
        assert state is not None
        for e in outcome.events:
            if isinstance(e, Command):
                assert e.kind == "Liquidate" and e.source == "system" and e.user_id == user, e
                assert e.body == {"account": "margin"} and e.id == f"liq/margin/{state.seq}", (e, state.seq)
                if (user, e.id) not in self.liq_asked:
                    self.liq_asked[(user, e.id)] = e
                    self.liq_pending.append((user, e.id))
        if valued:
            self.valued[user] = outcome.events

    def _check_fund_lines(self, user: str, lines: tuple[LedgerLine, ...]) -> None:
        """The insurance fund takes clearance fees (a liquidation fill's) and pays only shortfalls: lines out of it
        only in an entry that leaves the account with nothing to sell (no order, no debt, dust at most)."""
        entries: dict[str, list[LedgerLine]] = defaultdict(list)
        for line in lines:
            entries[line.entry_id].append(line)
        for entry in entries.values():
            fund = [line for line in entry if line.account == INSURANCE_FUND]
            assert all(line.entry_type == LIQUIDATION_FILL for line in fund if line.amount > 0), fund
            if not any(line.amount < 0 for line in fund):
                continue
            assert entry[0].entry_type in (LIQUIDATION, LIQUIDATION_FILL), entry
            event("insurance fund pays a shortfall")
            state = self.states[user]
            assert state is not None
            for account in {line.account for line in entry if line.user_id}:
                assert account not in state.liquidations and not any(a == account for a, _ in state.loans)
                for (name, asset), (available, frozen, borrowed) in state.balances.items():
                    if name == account:
                        assert not frozen and not borrowed, (account, asset, state.balances)
                        assert self._worth(asset, available) == 0, f"{account} had {available} {asset} to sell"

    def _worth(self, asset: str, minor: int) -> int:
        """What `minor` units are worth in USDT minor units at the latest price, of any age (rounded down)."""
        if asset == "USDT":
            return minor
        assert self.btc is not None
        return math.floor(Fraction(minor * UNIT["USDT"], UNIT["BTC"]) * self.btc[0])

    def resend(self, cmd: Command, first: Result) -> None:
        """Redelivery of an accepted input: the identical answer, and nothing applied."""
        before = copy.deepcopy(self.states[cmd.user_id])
        state, outcome = apply(self.states[cmd.user_id], cmd, self.ctx())
        assert state == before, "a duplicate changed the state"
        assert outcome.lines == () and outcome.events == ()
        assert outcome.result == first, (outcome.result, first)

    def expect(self, result: Result, accepted: bool, reason: str | None = None) -> bool:
        assert (result.status == "ACCEPTED") == accepted, (result, accepted)
        if reason is not None:
            assert result.reason == reason, result
        return accepted

    def user(self, name: str) -> ModelUser | None:
        return self.model[name]

    # -- rules ------------------------------------------------------------------------------------
    @initialize(bob_levers=st.booleans(), short=st.booleans(), pct=st.integers(10, 100),
                quality=st.sampled_from([55, 65, 72, 80, 100]))
    def open_two(self, bob_levers: bool, short: bool, pct: int, quality: int) -> None:
        """alice and bob start open, with USDT in their margin accounts and a BTC price; carol stays unknown
        until a rule opens her. Often bob starts with a leveraged trade: a liquidation under way early leaves the
        steps to see it through."""
        for user in ("alice", "bob"):
            self.open_account(user)
            self.deposit(user, "USDT", "margin", 200 + len(user), 31 + len(user))  # 100-102 USDT
        self.btc_price("60000")
        if bob_levers:
            self.lever("bob", short, pct, quality, 100)

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
        self._hold(user, f"o{oid}", account, asset, u * UNIT[asset] // 10)

    def _hold(self, user: str, oid: str, account: str, asset: str, amount: int) -> bool:
        r = self.send(OrderHold, user, order_id=oid, account=account, asset=asset, amount=amount_text(asset, amount))
        m = self.user(user)
        free = m is not None and not m.frozen and oid not in m.holds and oid not in m.closed
        if free and m is not None and account in m.liq:
            self.expect(r, False, "ACCOUNT_LIQUIDATING")
            return False
        if self.expect(r, free and m is not None and m.bal[(account, asset, "available")] >= amount):
            assert m is not None
            m.bal[(account, asset, "available")] -= amount
            m.bal[(account, asset, "frozen")] += amount
            m.holds[oid] = [account, asset, amount]
            return True
        return False

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
        remaining = held[2]
        assert isinstance(remaining, int)
        recv = price * UNIT[other(str(held[1]))] // 100
        # part > 100: more than the hold has left
        self._settle(user, oid, max(1, part * remaining // 100), recv, recv * fee_pct // 100)

    def _settle(self, user: str, oid: str, pay: int, recv: int, fee: int) -> bool:
        """A fill of the user's open order `oid`: pays `pay` from its hold, receives `recv` of the other asset."""
        m = self.user(user)
        assert m is not None
        account, pay_asset, remaining = m.holds[oid]
        assert isinstance(account, str) and isinstance(pay_asset, str) and isinstance(remaining, int)
        recv_asset = other(pay_asset)
        r = self.send(FillSettle, user, fill_id=f"f{self.n}", order_id=oid, account=account, pay_asset=pay_asset,
                      pay_amount=amount_text(pay_asset, pay), receive_asset=recv_asset,
                      receive_amount=amount_text(recv_asset, recv), fee_amount=amount_text(recv_asset, fee))
        if self.expect(r, pay <= remaining and fee <= recv):
            self._reduce(m, oid, pay)
            m.bal[(account, recv_asset, "available")] += recv - fee
            return True
        return False

    @rule(user=users, asset=assets, src=accounts, dst=accounts, u=units)
    def transfer(self, user: str, asset: str, src: str, dst: str, u: int) -> None:
        amount = u * UNIT[asset] // 10
        r = self.send(Transfer, user, asset=asset, amount=amount_text(asset, amount), from_account=src, to_account=dst)
        m = self.user(user)
        if m is not None and not m.frozen and src != dst and (src in m.liq or dst in m.liq):
            self.expect(r, False, "ACCOUNT_LIQUIDATING")  # nothing moves into or out of it
            return
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
    @rule(price=st.sampled_from(BTC_PRICES))
    def btc_price(self, price: str) -> None:
        """A mark price, in force from now; it touches the watched users (processors.engine.tick), as the worker
        does those whose band it may change or whose liquidation's next part is due (processors.monitor.changes):
        touching every watched user is the same: a touch of one for whom `changes` is false is checked to do
        nothing."""
        self.market.set_price("BTC", parse_price(price), self.now, self.now)
        self.btc = (Fraction(price), self.now)
        self.btc_text = price
        for user in USERS:
            state = self.states[user]
            if state is None or not state.opened or not monitor.watched(state):
                continue
            self.n += 1
            ctx = self.ctx()
            quiet = not monitor.changes(state, ctx)
            state, outcome = tick(state, ctx, f"price/{self.n}")
            self.states[user] = state
            assert not quiet or (outcome.lines == () and outcome.events == ()), outcome
            self.took(user, outcome, valued=True)
            m = self.model[user]
            assert m is not None
            self.liq_want = []
            for account, liq in sorted(m.liq.items()):
                # the next part once the cooldown is over, at the prices in force; not while one is stale
                if liq.due and self.now >= liq.due and self._level(m, account) is not None:
                    event("liquidation: next part at a price touch")
                    self._part(user, m, account, liq)
            assert liquidation_events(outcome) == self.liq_want, (liquidation_events(outcome), self.liq_want)

    @rule(seconds=st.integers(1, 5))
    def price_republished(self, seconds: int) -> None:
        """Seconds later the mark price is published again, unchanged: fresh, it touches the watched users (a
        liquidation's next part starts once its cooldown is over)."""
        self.now += seconds * 1_000
        if self.btc_text:
            self.btc_price(self.btc_text)

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
        self._borrow(user, asset, account, u * UNIT[asset] // (2 if asset == "USDT" else 10_000))  # 200 USDT, 0.04 BTC

    def _borrow(self, user: str, asset: str, account: str, amount: int) -> bool:
        r = self.send(Borrow, user, account=account, asset=asset, amount=amount_text(asset, amount))
        m = self.user(user)
        if m is None:
            self.expect(r, False, "UNKNOWN_USER")
            return False
        if m.frozen or account != "margin" or account in m.liq:
            self.expect(r, False, "ACCOUNT_FROZEN" if m.frozen else "NOT_A_MARGIN_ACCOUNT" if account != "margin"
                        else "ACCOUNT_LIQUIDATING")
            return False
        first_hour = math.ceil(Fraction(amount * RATES[asset], RATE_ONE))
        level, got, owe = self._level(m, account), self._value(asset, amount, False), self._value(
            asset, amount + first_hour, True)
        if level is None or got is None or owe is None:
            self.expect(r, False, "PRICE_UNAVAILABLE")
            return False
        if Fraction(level[0] + got, level[1] + owe) < Fraction(3, 2):  # the 3x tier's borrow line
            self.expect(r, False, "MARGIN_LEVEL_TOO_LOW")
            return False
        self.expect(r, True)
        self._book(m, account, asset)
        loan = m.loans.setdefault((account, asset), [0, self._hour()])
        loan[0] += first_hour
        m.bal[(account, asset, "available")] += amount
        m.bal[(account, asset, "borrowed")] += amount
        return True

    @rule(user=users, asset=assets, account=margin_mostly, u=st.integers(1, 400), pick=st.integers(0, 100))
    def repay(self, user: str, asset: str, account: str, u: int, pick: int) -> None:
        owing = sorted((name, a) for name, m_ in self.model.items() if m_ for (_, a) in m_.loans)
        if owing and pick % 5 and account == "margin":  # mostly a loan that exists
            user, asset = owing[pick % len(owing)]
        amount = u * UNIT[asset] // (10 if asset == "USDT" else 10_000)
        r = self.send(Repay, user, account=account, asset=asset, amount=amount_text(asset, amount))
        m = self.user(user)
        if m is None or account != "margin" or account in m.liq or (account, asset) not in m.loans:
            self.expect(r, False, "UNKNOWN_USER" if m is None else "NOT_A_MARGIN_ACCOUNT" if account != "margin"
                        else "ACCOUNT_LIQUIDATING" if account in m.liq else "NOTHING_TO_REPAY")
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
        if cmd.kind == "DepositConfirmed":
            # known by its deposit's record, not its id: answered with what became of it, and accepted, so the
            # margin accounts are valued after it, and one in the liquidation band is asked for (again)
            before = copy.deepcopy(self.states[cmd.user_id])
            state, outcome = apply(self.states[cmd.user_id], cmd, self.ctx())
            assert state == before, "a duplicate changed the state"
            assert outcome.lines == () and all(isinstance(e, Command) for e in outcome.events), outcome
            assert outcome.result.status == "ACCEPTED"
            self.took(cmd.user_id, outcome, valued=True)
        else:
            self.resend(cmd, first)

    # -- liquidation ------------------------------------------------------------------------------
    @rule(user=users, short=st.booleans(), pct=st.integers(10, 100), quality=st.sampled_from([55, 65, 72, 80, 100]),
          filled=st.sampled_from([100, 100, 60]))
    def lever(self, user: str, short: bool, pct: int, quality: int, filled: int) -> None:
        """A leveraged trade in the cross margin account: borrow `pct`% of what the borrow line allows (at most
        300 USDT worth), then an order for all the account holds of the borrowed asset, `filled`% of it sold for
        the other at `quality`% of the mark (long BTC on borrowed USDT, or short BTC); the rest stays held. A poor
        price, or a later price move, liquidates it."""
        m = self.user(user)
        level = self._level(m, "margin") if m is not None else None
        if m is None or level is None or self.btc is None:
            return
        asset = "BTC" if short else "USDT"
        room = min((2 * level[0] - 3 * level[1]) * pct // 100, 300 * UNIT["USDT"])  # (A + x) / (L + x) >= 1.5
        amount = room if asset == "USDT" else math.floor(Fraction(room * UNIT["BTC"], UNIT["USDT"]) / self.btc[0])
        if amount <= 0 or not self._borrow(user, asset, "margin", amount):
            return
        oid = f"lever{self.n}"
        have = m.bal[("margin", asset, "available")]
        if not self._hold(user, oid, "margin", asset, have):
            return
        pay = have * filled // 100
        recv = self._at_mark(asset, pay, quality)
        if recv and self._settle(user, oid, pay, recv, 0):  # else the order stays open (a liquidation releases it)
            event("lever: traded")

    def _at_mark(self, sell: str, amount: int, pct: int) -> int:
        """What selling `amount` of `sell` for the other asset receives at `pct`% of the latest mark (rounded down)."""
        assert self.btc is not None
        if sell == "BTC":
            exact = Fraction(amount * UNIT["USDT"], UNIT["BTC"]) * self.btc[0]
        else:
            exact = Fraction(amount * UNIT["BTC"], UNIT["USDT"]) / self.btc[0]
        return math.floor(exact * pct / 100)

    @rule(pick=st.integers(0, 10_000))
    def liquidate(self, pick: int) -> None:
        """A Liquidate the core asked for arrives in the user's partition, maybe long after (the price moved, time
        passed, another one applied): the model predicts the re-check. Sometimes one already applied (a resend:
        the first answer, nothing applied) or refused (decided again)."""
        if not self.liq_asked:
            return
        keys = self.liq_pending if self.liq_pending and pick % 4 else sorted(self.liq_asked)
        key = keys[pick % len(keys)]
        if key in self.liq_pending:
            self.liq_pending.remove(key)
        cmd = self.liq_asked[key]
        first = self.liq_accepted.get(key)
        if first is not None:
            event("liquidation: a Liquidate resent")
            self.resend(cmd, first)
            return
        user, account = key[0], "margin"
        m = self.model[user]
        assert m is not None, "asked for an open account only"
        self.liq_want = []
        outcome = self.apply_input(cmd)
        level = self._level(m, account)
        if account in m.liq:
            self.expect(outcome.result, False, "ALREADY_LIQUIDATING")
        elif level is None:
            self.expect(outcome.result, False, "PRICE_UNAVAILABLE")
        elif not in_band(level):
            self.expect(outcome.result, False, "NOT_LIQUIDATABLE")
        else:
            self.expect(outcome.result, True)
            self.liq_accepted[key] = outcome.result
            self._start(user, m, account, cmd.id)
        event(f"liquidation: Liquidate {outcome.result.reason or outcome.result.status}")
        assert liquidation_events(outcome) == self.liq_want, (liquidation_events(outcome), self.liq_want)

    @rule(pick=st.integers(0, 10_000), whole=st.booleans(), part=st.integers(1, 120),
          factor=st.integers(50, 120), zero=st.integers(0, 9), reuse=st.integers(0, 4), again=st.integers(0, 4))
    def liquidation_fill(self, pick: int, whole: bool, part: int, factor: int, zero: int, reuse: int,
                         again: int) -> None:
        """The matching engine fills a liquidation order, whole or in part, at `factor`% of the mark (sometimes
        for nothing); sometimes an order filled already (UNKNOWN_LIQUIDATION_ORDER), a fill id settled already
        under another input id (FILL_SETTLED), or the same input again (its answer, nothing applied)."""
        open_orders = sorted((u, oid) for u, m in self.model.items() if m for q in m.liq.values() for oid in q.orders)
        if open_orders and pick % 5:
            user, oid = open_orders[pick % len(open_orders)]
        elif self.liq_orders:
            user, oid = self.liq_orders[pick % len(self.liq_orders)]
        else:
            return
        m = self.model[user]
        assert m is not None
        account, order = next(((a, q.orders[oid]) for a, q in m.liq.items() if oid in q.orders), ("margin", None))
        if order is None:
            r = self.send(LiquidationFill, user, fill_id=f"lf{self.n}", order_id=oid, pay_amount="1",
                          receive_amount="1")
            self.expect(r, False, "UNKNOWN_LIQUIDATION_ORDER")
            event("liquidation fill: UNKNOWN_LIQUIDATION_ORDER")
            return
        pay = order.remaining if whole else max(1, order.remaining * part // 100)
        receive = 0 if zero == 0 else self._at_mark(order.sell, pay, factor)
        fill_id = order.fills[-1] if reuse == 0 and order.fills else f"lf{self.n}"
        r = self._fill_order(user, m, account, oid, order, fill_id, pay, receive)
        if again == 0 and r.status == "ACCEPTED":
            self.resend(self.sent[-1], r)

    @rule(factor=st.integers(80, 110), pieces=st.integers(1, FILLS_MAX + 1), dup=st.booleans())
    def matching_engine_catches_up(self, factor: int, pieces: int, dup: bool) -> None:
        """The matching engine fills every open liquidation order, at `factor`% of the mark, in `pieces` fills (one
        more than an order takes: TOO_MANY_FILLS, then the rest at once); `dup`: each partial fill reported twice,
        the second time under another input id (FILL_SETTLED)."""
        for user, m in self.model.items():
            for account, liq in (list(m.liq.items()) if m else []):
                for oid, order in list(liq.orders.items()):
                    assert m is not None
                    for piece in range(pieces - 1):
                        if not order.remaining:
                            break  # filled whole already (a few minor units, each fill one of them)
                        pay = max(1, order.remaining // (pieces - piece))
                        fill_id = f"lf{self.n}"
                        r = self._fill_order(user, m, account, oid, order, fill_id, pay,
                                             self._at_mark(order.sell, pay, factor))
                        if dup and r.status == "ACCEPTED" and order.remaining:
                            self._fill_order(user, m, account, oid, order, fill_id, pay, 1)
                    if order.remaining:
                        pay = order.remaining
                        self._fill_order(user, m, account, oid, order, f"lf{self.n}", pay,
                                         self._at_mark(order.sell, pay, factor))

    def _fill_order(self, user: str, m: ModelUser, account: str, oid: str, order: ModelOrder, fill_id: str,
                    pay: int, receive: int) -> Result:
        """A LiquidationFill of the open order `oid`: the model predicts the answer, and what an accepted one does."""
        self.liq_want = []
        r = self.send(LiquidationFill, user, fill_id=fill_id, order_id=oid, pay_amount=amount_text(order.sell, pay),
                      receive_amount=amount_text(order.buy, receive))
        if fill_id in order.fills:
            self.expect(r, False, "FILL_SETTLED")
        elif pay > order.remaining:
            self.expect(r, False, "HOLD_EXCEEDED")
        elif pay < order.remaining and len(order.fills) + 1 >= FILLS_MAX:
            self.expect(r, False, "TOO_MANY_FILLS")
        else:
            self.expect(r, True)
            self._fill(user, m, account, oid, fill_id, pay, receive)
        event(f"liquidation fill: {r.reason or r.status}")
        outcome_events = liquidation_events(self.last_outcome)
        assert outcome_events == self.liq_want, (outcome_events, self.liq_want)
        return r

    def _start(self, user: str, m: ModelUser, account: str, liq_id: str) -> None:
        """The spec's start: the account locked, its holds released, its first part."""
        for oid, (held_account, asset, remaining) in list(m.holds.items()):
            if held_account == account:
                assert isinstance(asset, str) and isinstance(remaining, int)
                event("liquidation: a hold released")
                m.bal[(account, asset, "frozen")] -= remaining
                m.bal[(account, asset, "available")] += remaining
                del m.holds[oid]
                m.closed.add(oid)
        liq = m.liq[account] = ModelLiquidation(liq_id)
        self.liq_want.append((STARTED, user, account, 0))
        self._part(user, m, account, liq)

    def _debts(self, m: ModelUser, account: str) -> list[str]:
        return sorted({a for a in SCALE if m.bal[(account, a, "borrowed")]} | {a for n, a in m.loans if n == account})

    def _owed(self, m: ModelUser, account: str, asset: str) -> tuple[int, int]:
        """(interest, principal) owed, interest booked to now."""
        self._book(m, account, asset)
        loan = m.loans.get((account, asset))
        return (loan[0] if loan else 0), m.bal[(account, asset, "borrowed")]

    def _pay(self, m: ModelUser, account: str, asset: str, interest: int, principal: int, own: bool) -> None:
        """Pay interest, then principal, from the account's own available balance or from outside it."""
        if own:
            m.bal[(account, asset, "available")] -= interest + principal
        loan = m.loans.get((account, asset))
        assert loan is not None or not interest
        m.bal[(account, asset, "borrowed")] -= principal
        if loan is not None:
            loan[0] -= interest
            if not m.bal[(account, asset, "borrowed")]:
                assert not loan[0], "interest is paid first"
                del m.loans[(account, asset)]

    def _part(self, user: str, m: ModelUser, account: str, liq: ModelLiquidation) -> None:
        liq.part += 1
        liq.due = 0
        if liq.part > 1:
            event("liquidation: a second part")
        debts: dict[str, int] = {}
        for asset in self._debts(m, account):
            interest, principal = self._owed(m, account, asset)
            have = m.bal[(account, asset, "available")]
            on_interest = min(have, interest)
            on_principal = min(have - on_interest, principal)
            self._pay(m, account, asset, on_interest, on_principal, True)
            if interest + principal > on_interest + on_principal:
                debts[asset] = interest + principal - on_interest - on_principal
        if not debts:
            event("liquidation: the account's own funds paid its debts")
            self._complete(user, m, account, 0)
            return
        worth = {asset: self._value(asset, owed, True) for asset, owed in debts.items()}
        target = min(worth, key=lambda asset: (-(worth[asset] or 0), asset))
        collateral = []
        for asset in SCALE:
            have = m.bal[(account, asset, "available")]
            if have and asset not in debts:
                value = self._value(asset, have, False)
                assert value is not None, "a part is valued at fresh prices"
                if value:
                    collateral.append((value, asset))
                else:
                    event("liquidation: dust not sold")
        if not collateral:
            self._complete(user, m, account, self._cover(m, account))
            return
        debt_value = worth[target]
        assert debt_value is not None
        budget = min(PART_VALUE, math.ceil(debt_value * (1 + LIQ_FEE + LIQ_SLIPPAGE)))
        if budget == PART_VALUE:
            event("liquidation: a part capped at the part value")
        for _, asset in sorted(collateral, key=lambda pair: (-pair[0], pair[1])):
            if budget <= 0:
                break
            have = m.bal[(account, asset, "available")]
            if asset == "USDT":
                need = budget
            else:
                price = self._fresh_btc()
                assert price is not None
                need = math.ceil(Fraction(budget * UNIT["BTC"], UNIT["USDT"]) / price)
            sell = min(have, need)
            sold = self._value(asset, sell, False)
            assert sold is not None
            budget -= sold
            m.bal[(account, asset, "available")] -= sell
            m.bal[(account, asset, "frozen")] += sell
            oid = f"{liq.id}/{liq.part}/{asset}"
            liq.orders[oid] = ModelOrder(asset, target, sell)
            self.liq_orders.append((user, oid))
            mark = Fraction(math.floor(self._price(asset) / self._price(target) * 10**18), 10**18)
            self.liq_want.append(("order", oid, self.now, user, account, asset, sell, target, mark, liq.part))

    def _price(self, asset: str) -> Fraction:
        if asset == "USDT":
            return Fraction(1)
        price = self._fresh_btc()
        assert price is not None
        return price

    def _fill(self, user: str, m: ModelUser, account: str, oid: str, fill_id: str, pay: int, receive: int) -> None:
        """The spec's fill: the frozen coins paid; the proceeds pay the account's debt in them (interest, then
        principal), then the fee (2% of the proceeds rounded up, at most what is left) to the insurance fund,
        the rest to the account."""
        liq = m.liq[account]
        order = liq.orders[oid]
        m.bal[(account, order.sell, "frozen")] -= pay
        interest, principal = self._owed(m, account, order.buy)
        on_interest = min(receive, interest)
        on_principal = min(receive - on_interest, principal)
        self._pay(m, account, order.buy, on_interest, on_principal, False)
        left = receive - on_interest - on_principal
        fee = min(left, math.ceil(receive * LIQ_FEE))
        self.fund_fees[order.buy] += fee
        m.bal[(account, order.buy, "available")] += left - fee
        order.remaining -= pay
        if order.remaining:
            order.fills.append(fill_id)
            event("liquidation fill: partial")
        else:
            del liq.orders[oid]
        if receive == 0:
            event("liquidation fill: received nothing")
        if liq.orders:
            return
        if not self._debts(m, account):
            self._complete(user, m, account, 0)
        elif not any(m.bal[(account, asset, "available")] for asset in SCALE):
            self._complete(user, m, account, self._cover(m, account))
        else:
            event("liquidation: debt left after a part: cooldown")
            liq.due = self.now + COOLDOWN_MS

    def _cover(self, m: ModelUser, account: str) -> int:
        """Nothing left to sell: the insurance fund pays every debt left; its value at the latest prices (of any
        age), debts valued up."""
        event("liquidation: shortfall")
        value = 0
        for asset in self._debts(m, account):
            interest, principal = self._owed(m, account, asset)
            self._pay(m, account, asset, interest, principal, False)
            self.fund_paid[asset] += interest + principal
            assert self.btc is not None
            price = Fraction(1) if asset == "USDT" else self.btc[0]
            value += math.ceil(Fraction((interest + principal) * UNIT["USDT"], UNIT[asset]) * price)
        return value

    def _complete(self, user: str, m: ModelUser, account: str, shortfall: int) -> None:
        assert not self._debts(m, account) and not m.liq[account].orders
        del m.liq[account]
        event("liquidation: completed, " + ("a shortfall" if shortfall else "no shortfall"))
        self.liq_want.append((COMPLETED, user, account, shortfall))

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
            assert {a: (q.id, q.part, q.due_ms, {k: (o.sell, o.buy, o.remaining, o.fills) for k, o in q.orders.items()})
                    for a, q in state.liquidations.items()} == {
                a: (q.id, q.part, q.due, {k: (o.sell, o.buy, o.remaining, o.fills) for k, o in q.orders.items()})
                for a, q in m.liq.items()}, f"{user}: liquidations"
            assert UserState.from_bytes(state.to_bytes()) == state

    @invariant()
    def insurance_fund_takes_fees_and_pays_shortfalls(self) -> None:
        """The fund's lines in sum: the model's clearance fees in, the model's shortfalls out (each line out was
        checked as it came: only where the account had nothing left to sell)."""
        fees: dict[str, int] = defaultdict(int)
        paid: dict[str, int] = defaultdict(int)
        for line in self.lines.values():
            if line.account == INSURANCE_FUND:
                if line.amount > 0:
                    fees[line.asset] += line.amount
                else:
                    paid[line.asset] -= line.amount
        assert fees == {a: v for a, v in self.fund_fees.items() if v}, (dict(fees), dict(self.fund_fees))
        assert paid == {a: v for a, v in self.fund_paid.items() if v}, (dict(paid), dict(self.fund_paid))

    @invariant()
    def liquidation_asked_exactly_in_the_band(self) -> None:
        """After each valuation (an accepted input, a touch): a Liquidate is asked for an account the model finds
        at or below its liquidation line at fresh prices and not being liquidated, and never for another; always
        for an indebted one."""
        for user, events in self.valued.items():
            m = self.model[user]
            asked = [e for e in events if isinstance(e, Command)]
            if m is None:
                assert not asked
                continue
            level = self._level(m, "margin")
            due = "margin" not in m.liq and level is not None and in_band(level)
            if asked:
                assert due, (user, asked, level, m.liq)
                event("liquidation: asked for")
            if due and any(account == "margin" for account, _ in m.loans):
                assert asked, (user, level)
        self.valued.clear()


EngineMachine.TestCase.settings = settings(
    max_examples=600, stateful_step_count=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEngine = EngineMachine.TestCase
