"""The one registry of input kinds: where each kind is declared once.

Every input has a source: a user command (API gateway, matching engine), the chain (watcher, signer),
an operator, or the system (clock ticks, mark prices, pool rates, liquidations). Each source writes its
own topic (Kafka ACLs keep them apart, DESIGN §7), and an input id is unique within its source only:
deduplication keys on (source, id), so no input of one source can shadow another's (a user cannot
pre-empt their own deposit's id). Routing (streams.client), the source check (processors.engine), the
sink's chain-events landing (sinks.sink) and the builders of inputs (`command`) derive from this table.
A kind is named by its body type (processors.messages), which has its Avro schema's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar

from processors import accounts, deposits, liquidation, loans, messages, orders, withdrawals
from processors.applied import Applied
from processors.context import Context
from processors.messages import (
    AccountUnfreeze,
    Borrow,
    BorrowRate,
    ClockTick,
    Command,
    DepositConfirmed,
    DepositReverted,
    DepositSeen,
    FillSettle,
    Liquidate,
    LiquidationFill,
    LiquidationOrderClosed,
    MarkPrice,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Repay,
    Transfer,
    WithdrawalApprove,
    WithdrawalBroadcast,
    WithdrawalCancel,
    WithdrawalConfirmed,
    WithdrawalFailed,
    WithdrawalRequest,
)
from processors.state import UserState

Handler = Callable[[UserState, Command, Context], Applied]

# The sources, as the core sees them; streams.topics maps each to the topic it arrives on. Declared in
# processors.messages, below the handlers (which name them in ledger entry ids).
USER: Final = messages.USER
CHAIN: Final = messages.CHAIN
OPERATOR: Final = messages.OPERATOR
SYSTEM: Final = messages.SYSTEM
SOURCES: Final = messages.SOURCES


@dataclass(frozen=True, slots=True)
class Kind:
    body: type[Mapping[str, Any]]  # its TypedDict, named as the kind and its Avro record
    source: str  # the one source it is taken from
    handler: Handler
    # A risk freeze stops the user from adding exposure or moving money out; the chain and the matching
    # engine still report what already happened, and the user may still reduce what is held.
    blocked_when_frozen: bool = False
    # Deduplicated by the state of what it reports (a deposit's record), not by its input id: a deposit
    # reverted by a reorganization and re-included later comes back with the same id and is credited again.
    by_record: bool = False
    # An input for a whole partition, not for one user (a clock tick): the step handles it
    # (processors.batch), and one that names a user is refused by the core.
    per_partition: bool = False

    @property
    def name(self) -> str:
        return self.body.__name__

    @property
    def from_chain(self) -> bool:
        """Chain facts: for an account not opened yet they wait (parked) instead of being refused."""
        return self.source == CHAIN

    @property
    def landed(self) -> bool:
        """The sink lands the input itself, as it came in (sinks.sink, table chain_events): what the chain
        reported is audited apart from what the engine made of it. Other inputs land as their results."""
        return self.source == CHAIN


KINDS: Final[dict[str, Kind]] = {k.name: k for k in (
    Kind(OpenAccount, USER, accounts.open_account),
    Kind(OrderHold, USER, orders.hold, blocked_when_frozen=True),
    Kind(OrderRelease, USER, orders.release),
    Kind(FillSettle, USER, orders.fill),
    Kind(Transfer, USER, accounts.transfer, blocked_when_frozen=True),
    Kind(Borrow, USER, loans.borrow, blocked_when_frozen=True),
    Kind(Repay, USER, loans.repay),
    Kind(WithdrawalRequest, USER, withdrawals.request, blocked_when_frozen=True),
    Kind(WithdrawalCancel, USER, withdrawals.cancel),
    Kind(WithdrawalApprove, OPERATOR, withdrawals.approve, blocked_when_frozen=True),
    Kind(AccountUnfreeze, OPERATOR, accounts.unfreeze),
    Kind(DepositSeen, CHAIN, deposits.seen, by_record=True),
    Kind(DepositConfirmed, CHAIN, deposits.confirmed, by_record=True),
    Kind(DepositReverted, CHAIN, deposits.reverted),
    Kind(WithdrawalBroadcast, CHAIN, withdrawals.broadcast),
    Kind(WithdrawalConfirmed, CHAIN, withdrawals.confirmed),
    Kind(WithdrawalFailed, CHAIN, withdrawals.failed),
    Kind(ClockTick, SYSTEM, accounts.not_per_user, per_partition=True),
    Kind(MarkPrice, SYSTEM, accounts.not_per_user, per_partition=True),
    Kind(BorrowRate, SYSTEM, accounts.not_per_user, per_partition=True),
    # The system's own decision, sent into the user's partition by the monitor (processors.liquidation).
    Kind(Liquidate, SYSTEM, liquidation.start),
    # The matching engine reports what a liquidation order sold, on its own (the user commands') topic.
    Kind(LiquidationFill, USER, liquidation.fill),
    # ... and that it closed one with a part unfilled.
    Kind(LiquidationOrderClosed, USER, liquidation.closed),
)}
CHAIN_KINDS: Final = frozenset(k.name for k in KINDS.values() if k.source == CHAIN)
_BY_BODY: Final[dict[object, Kind]] = {k.body: k for k in KINDS.values()}

_Body = TypeVar("_Body", bound=Mapping[str, Any])
_Fields = ParamSpec("_Fields")


def command(body: Callable[_Fields, _Body], id: str, user: str, /,
            *args: _Fields.args, **fields: _Fields.kwargs) -> Command:
    """An input of the kind whose body type is `body`, with mypy checking the fields against it:
    `command(OpenAccount, "c1", "alice", kyc_tier=1, region="DE")`. It is sent on the kind's own source;
    its client time (ts_ms) is 0: `command(...)._replace(ts_ms=...)` where a client's clock matters."""
    kind = _BY_BODY.get(body)
    assert kind is not None, f"{body} is not the body type of a kind in processors.inputs.KINDS"
    return Command(id, 0, user, kind.name, body(*args, **fields), kind.source)


def source_of(kind: str) -> str:
    """The source a kind is taken from; an unknown kind is a user's (and refused as unknown)."""
    spec = KINDS.get(kind)
    return spec.source if spec is not None else USER
