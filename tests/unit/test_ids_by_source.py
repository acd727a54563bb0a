"""Property of the core: an id is unique within its source only, and every input applies exactly once.

Random interleavings of inputs from three sources drawn from one small pool of id strings (deposit-shaped,
so the chain may send them, and so may the user and an operator): a user's transfers, the chain's deposits,
an operator's withdrawal approvals. Each is resent with its body or with another, some after more inputs
than the state's window of 64 and after the state was stored and read back. A model written apart from the
core says what must happen:

* a distinct (source, id) applies once: its first acceptance moves money or approves, nothing after it does;
* a resend with the same body gets the first answer; with another body it is refused ID_REUSED (a deposit is
  known by its record instead: credited once, every later confirmation answered without a credit);
* no source's id shadows another's: the answer to an input is always its own kind's, and an id taken by
  one source applies afresh from another (the user's transfer cannot pre-empt the chain's deposit).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processors.config import default_config
from processors.engine import apply
from processors.messages import Command, Result
from processors.money import parse_amount
from processors.state import UserState
from tests.unit.core import Engine, ctx

CFG = default_config()
USER = "u"
ADDRESS = "0x" + "ab" * 20
IDS = tuple(f"ethereum:0x{n}:0" for n in range(4))
WITHDRAWALS = ("w0", "w1", "w2", "w3")
WINDOW = CFG.applied_window
USDT = CFG.assets["USDT"].scale

# (who sends, which id of the pool, which of two bodies); "later" pushes the window and reloads the state
Action = tuple[str, int, int]
actions = st.tuples(st.sampled_from(["user", "chain", "operator", "later"]), st.integers(0, len(IDS) - 1),
                    st.integers(0, 1))


def usdt(text: str) -> int:
    return parse_amount(text, USDT)


def deposit(tx: str, amount: str) -> Command:
    return Command(f"ethereum:{tx}:0", 1, USER, "DepositConfirmed",
                   {"chain": "ethereum", "tx_hash": tx, "log_index": 0, "address": ADDRESS, "asset": "USDT",
                    "amount": amount, "block_number": 1, "account": "spot"}, "chain")


def transfer(cmd_id: str, amount: str) -> Command:
    return Command(cmd_id, 1, USER, "Transfer", {"asset": "USDT", "amount": amount, "from_account": "spot",
                                                 "to_account": "margin"}, "user")


def approve(cmd_id: str, withdrawal: str) -> Command:
    return Command(cmd_id, 1, USER, "WithdrawalApprove", {"withdrawal_id": withdrawal, "approver": "ops"}, "operator")


def the_input(who: str, n: int, variant: int) -> Command:
    """The input `who` sends under pool id n; `variant` picks one of two bodies for that id."""
    if who == "user":
        return transfer(IDS[n], str(1 + n + 10 * variant))
    if who == "chain":
        return deposit(f"0x{n}", str(5 + variant))
    return approve(IDS[n], WITHDRAWALS[(n + variant) % len(WITHDRAWALS)])


def setup() -> UserState:
    """An account with funds and four withdrawals waiting for one operator approval each (ids off the pool)."""
    state, _ = apply(None, Command("open", 1, USER, "OpenAccount", {"kyc_tier": 1, "region": "DE"}, "user"), ctx(CFG))
    state, out = apply(state, deposit("0xfund", "1000000"), ctx(CFG))
    assert out.result.status == "ACCEPTED"
    for k, wid in enumerate(WITHDRAWALS):
        state, out = apply(state, Command(f"req-{k}", 1, USER, "WithdrawalRequest", {
            "withdrawal_id": wid, "account": "spot", "chain": "ethereum", "asset": "USDT", "amount": "20000",
            "fee": "1", "address": ADDRESS}, "user"), ctx(CFG))
        assert out.result.status == "ACCEPTED" and state.withdrawals[wid].status == "pending_approval"
    return state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=1, max_size=40))
def test_duplicate_ids_from_different_sources_apply_exactly_once(plan: list[Action]) -> None:
    Engine.reset()  # hypothesis runs many examples in one test: each starts with an empty engine memory
    state = setup()
    spot, margin = state.available("spot", "USDT"), state.available("margin", "USDT")
    first: dict[tuple[str, str], tuple[Command, Result]] = {}  # (source, id) -> first accepted input, answer
    credited: set[str] = set()  # deposit ids
    since: dict[tuple[str, str], int] = {}  # (source, id) -> `later` when it first applied
    approved: set[str] = set()  # withdrawal ids
    signed: Counter[str] = Counter()  # withdrawal id -> times sent to the signer
    later = 0
    for who, n, variant in plan:
        if who == "later":
            # more than a window of other inputs, then the state as a restarted worker reads it back
            for _ in range(WINDOW + 1):
                later += 1
                state, out = apply(state, transfer(f"later-{later}", "0.01"), ctx(CFG))
                assert out.result.status == "ACCEPTED"
            spot, margin = spot - (WINDOW + 1) * usdt("0.01"), margin + (WINDOW + 1) * usdt("0.01")
            state = UserState.from_bytes(state.to_bytes())
            continue
        cmd = the_input(who, n, variant)
        state, out = apply(state, cmd, ctx(CFG))
        got = out.result
        assert (got.id, got.kind) == (cmd.id, cmd.kind), "an input is answered as itself, never as another"
        signed.update(ev.id for ev in out.events)
        key = (cmd.source, cmd.id)
        # what the example covers (shown by pytest --hypothesis-show-statistics)
        if any(source != cmd.source and i == cmd.id for source, i in first) or (who != "chain" and cmd.id in credited):
            event("an id another source took first")
        if key in since:
            event("a resend" + (" after more than a window of inputs and a reload" if since[key] < later else ""))
        if who == "chain":
            if cmd.id in credited:
                assert (got.status, out.lines) == ("ACCEPTED", ()), "a deposit is credited once"
            else:
                assert (got.status, got.reason, len(out.lines)) == ("ACCEPTED", None, 2), got
                credited.add(cmd.id)
                since[key] = later
                spot += usdt(cmd.body["amount"])
        elif key in first:
            before, answer = first[key]
            if before.body == cmd.body:
                assert got == answer, "a resend gets its first answer"
            else:
                assert (got.status, got.reason) == ("REJECTED", "ID_REUSED"), got
            assert (out.lines, out.events) == ((), ()), "and applies nothing"
        elif who == "user":
            assert (got.status, got.reason, len(out.lines)) == ("ACCEPTED", None, 2), got
            amount = usdt(cmd.body["amount"])
            spot, margin = spot - amount, margin + amount
            first[key], since[key] = (cmd, got), later
        else:
            wid = cmd.body["withdrawal_id"]
            if wid in approved:
                # refused on a state that moved on; a refusal is not remembered, the id stays free
                assert (got.status, got.reason) == ("REJECTED", "BAD_WITHDRAWAL_STATE"), got
            else:
                assert got.status == "ACCEPTED" and [ev.id for ev in out.events] == [wid], got
                approved.add(wid)
                first[key], since[key] = (cmd, got), later
        assert (state.available("spot", "USDT"), state.available("margin", "USDT")) == (spot, margin)
        assert {w: state.withdrawals[w].status for w in WITHDRAWALS} == {
            w: "approved" if w in approved else "pending_approval" for w in WITHDRAWALS}
    assert signed == Counter(approved), "each approved withdrawal goes to the signer once"


def test_inputs_of_two_sources_under_one_id_write_ledger_lines_of_their_own_ids() -> None:
    state = setup()
    state, squat = apply(state, transfer(IDS[0], "1"), ctx(CFG))
    state, credit = apply(state, deposit("0x0", "5"), ctx(CFG))
    assert len(squat.lines) == len(credit.lines) == 2, "both apply (the property above)"
    assert not {line.id for line in squat.lines} & {line.id for line in credit.lines}
