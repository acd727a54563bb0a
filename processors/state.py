"""One user's state: balances per (sub-account, asset), open holds, withdrawals, deposits, and the
recent input ids that make every input apply once.

Serialized as versioned JSON (not pickle) so a changelog written by one release is read by the next.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from processors.messages import Result

# positions in a balance triple
AVAILABLE: Final = 0
FROZEN: Final = 1
BORROWED: Final = 2
# 2: applied results stored whole (with user_id); 3: parked chain events; 4: input positions (`through`)
STATE_VERSION: Final = 4
READS_VERSIONS: Final = frozenset({3, 4})  # a version 3 state has no positions: read as "none recorded"

AccountStatus = Literal["normal", "frozen"]
WithdrawalStatus = Literal["pending_approval", "approved", "broadcast", "completed", "failed", "cancelled"]
DepositStatus = Literal["seen", "credited", "below_minimum", "reverted"]
_JSON: Final = json.JSONEncoder(separators=(",", ":"))  # json.dumps with options builds an encoder per call
OPEN_WITHDRAWAL: Final[frozenset[str]] = frozenset({"pending_approval", "approved", "broadcast"})


@dataclass(slots=True)
class Hold:
    account: str
    asset: str
    remaining: int

    def __post_init__(self) -> None:
        assert self.remaining > 0, "an empty hold is closed, not kept"


@dataclass(slots=True)
class Withdrawal:
    account: str
    chain: str
    asset: str
    amount: int
    fee: int
    address: str
    status: WithdrawalStatus
    required_approvals: int
    approvals: list[str] = field(default_factory=list)
    tx_hash: str = ""

    @property
    def frozen(self) -> int:
        """What this withdrawal keeps frozen while open."""
        return self.amount + self.fee


@dataclass(slots=True)
class Deposit:
    asset: str
    amount: int
    account: str
    status: DepositStatus


@dataclass(slots=True)
class UserState:
    user_id: str
    # False until OpenAccount: the state then only remembers the inputs it refused, so that a
    # redelivered input gets its first answer again even after the account was opened.
    opened: bool = True
    kyc_tier: int = 0
    region: str = ""
    status: AccountStatus = "normal"
    # (sub-account, asset) -> [available, frozen, borrowed]; a list so the core updates it in place
    balances: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    withdrawals: dict[str, Withdrawal] = field(default_factory=dict)
    deposits: dict[str, Deposit] = field(default_factory=dict)
    # withdrawal id -> chain events that arrived before the withdrawal: [input id, ts_ms, kind, body]
    parked: dict[str, list[list[Any]]] = field(default_factory=dict)
    # input id -> its result, the most recent `EngineConfig.applied_window` inputs, oldest first
    applied: dict[str, Result] = field(default_factory=dict)
    seq: int = 0  # ledger lines written for this user so far
    # input topic -> offset of the latest record whose inputs this state includes (on the user's
    # partition). Stored with the state, so a stored state says exactly which inputs it holds: after a
    # crash that stored some of a step's states and not others, re-applying the step skips them here.
    through: dict[str, int] = field(default_factory=dict)
    # input id -> the JSON text of its result in `applied`: a result never changes, so storing the state
    # after a step encodes only the new ones (the window is most of the stored bytes). Not state itself.
    applied_json: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def balance(self, account: str, asset: str) -> list[int]:
        """The live triple (created on first use)."""
        triple = self.balances.get((account, asset))
        if triple is None:
            triple = self.balances[(account, asset)] = [0, 0, 0]
        return triple

    def available(self, account: str, asset: str) -> int:
        triple = self.balances.get((account, asset))
        return triple[AVAILABLE] if triple else 0

    def remember(self, result: Result, window: int) -> None:
        self.applied[result.id] = result
        while len(self.applied) > window:
            oldest = next(iter(self.applied))
            del self.applied[oldest]
            self.applied_json.pop(oldest, None)

    def prune_withdrawals(self, keep_closed: int) -> None:
        """Finished withdrawals are history (the ledger keeps it); keep the newest few for duplicate ids."""
        closed = [wid for wid, w in self.withdrawals.items() if w.status not in OPEN_WITHDRAWAL]
        for wid in closed[: max(0, len(closed) - keep_closed)]:
            del self.withdrawals[wid]

    def check(self) -> None:
        """Invariants that hold between any two inputs (DESIGN §2.3); cheap enough for tests."""
        for key, (available, frozen, borrowed) in self.balances.items():
            assert available >= 0 and frozen >= 0 and borrowed >= 0, f"{self.user_id} {key} negative"
        held: dict[tuple[str, str], int] = {}
        for hold in self.holds.values():
            held[(hold.account, hold.asset)] = held.get((hold.account, hold.asset), 0) + hold.remaining
        for w in self.withdrawals.values():
            if w.status in OPEN_WITHDRAWAL:
                held[(w.account, w.asset)] = held.get((w.account, w.asset), 0) + w.frozen
        for key, triple in self.balances.items():
            assert triple[FROZEN] == held.get(key, 0), f"{self.user_id} {key}: frozen != open holds"

    # -- serialization -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "v": STATE_VERSION,
            "user": self.user_id,
            "opened": self.opened,
            "kyc": self.kyc_tier,
            "region": self.region,
            "status": self.status,
            "seq": self.seq,
            "balances": [[a, s, *t] for (a, s), t in self.balances.items()],
            "holds": {k: [h.account, h.asset, h.remaining] for k, h in self.holds.items()},
            "withdrawals": {
                k: [w.account, w.chain, w.asset, w.amount, w.fee, w.address, w.status,
                    w.required_approvals, w.approvals, w.tx_hash]
                for k, w in self.withdrawals.items()
            },
            "deposits": {k: [d.asset, d.amount, d.account, d.status] for k, d in self.deposits.items()},
            "parked": self.parked,
            "through": self.through,
        }
        texts = self.applied_json
        if len(texts) > 2 * len(self.applied) + 8:  # ids dropped from `applied` other than by remember()
            texts.clear()
        window = []
        for input_id, result in self.applied.items():
            text = texts.get(input_id)
            if text is None:
                text = texts[input_id] = _JSON.encode(result)  # Results are tuples: JSON arrays as they are
            window.append(text)
        head = _JSON.encode(doc)
        assert head[-1] == "}"
        return f'{head[:-1]},"applied":[{",".join(window)}]}}'.encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        doc = json.loads(data)
        assert doc["v"] in READS_VERSIONS, f"state version {doc['v']} is not one this release reads"
        user = doc["user"]
        return cls(
            user_id=user,
            opened=doc["opened"],
            kyc_tier=doc["kyc"],
            region=doc["region"],
            status=doc["status"],
            seq=doc["seq"],
            balances={(a, s): [av, fr, bo] for a, s, av, fr, bo in doc["balances"]},
            holds={k: Hold(*v) for k, v in doc["holds"].items()},
            withdrawals={k: Withdrawal(*v) for k, v in doc["withdrawals"].items()},
            deposits={k: Deposit(*v) for k, v in doc["deposits"].items()},
            parked=doc["parked"],
            through=doc.get("through", {}),
            applied={r[0]: Result(*r) for r in doc["applied"]},
        )
