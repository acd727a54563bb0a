"""The one registry of input kinds: where each kind is declared once.

Every input has a source: a user command (API gateway, matching engine), the chain (watcher, signer),
an operator, or the system (clock ticks, later liquidations and price moves). Each source writes its
own topic (Kafka ACLs keep them apart, DESIGN §7), and an input id is unique within its source only:
deduplication keys on (source, id), so no input of one source can shadow another's (a user cannot
pre-empt their own deposit's id). Routing (streams.client), the source check (processors.engine) and
the sink's chain-events landing derive from this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from processors import accounts, deposits, orders, withdrawals
from processors.applied import Applied
from processors.context import Context
from processors.messages import Command
from processors.state import UserState

Handler = Callable[[UserState, Command, Context], Applied]

# The sources, as the core sees them; streams.topics maps each to the topic it arrives on.
USER: Final = "user"
CHAIN: Final = "chain"
OPERATOR: Final = "operator"
SYSTEM: Final = "system"
SOURCES: Final = (USER, CHAIN, OPERATOR, SYSTEM)


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # the Avro body type's short name
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
    def from_chain(self) -> bool:
        """Chain facts: for an account not opened yet they wait (parked) instead of being refused."""
        return self.source == CHAIN


KINDS: Final[dict[str, Kind]] = {k.name: k for k in (
    Kind("OpenAccount", USER, accounts.open_account),
    Kind("OrderHold", USER, orders.hold, blocked_when_frozen=True),
    Kind("OrderRelease", USER, orders.release),
    Kind("FillSettle", USER, orders.fill),
    Kind("Transfer", USER, accounts.transfer, blocked_when_frozen=True),
    Kind("WithdrawalRequest", USER, withdrawals.request, blocked_when_frozen=True),
    Kind("WithdrawalCancel", USER, withdrawals.cancel),
    Kind("WithdrawalApprove", OPERATOR, withdrawals.approve, blocked_when_frozen=True),
    Kind("AccountUnfreeze", OPERATOR, accounts.unfreeze),
    Kind("DepositSeen", CHAIN, deposits.seen, by_record=True),
    Kind("DepositConfirmed", CHAIN, deposits.confirmed, by_record=True),
    Kind("DepositReverted", CHAIN, deposits.reverted),
    Kind("WithdrawalBroadcast", CHAIN, withdrawals.broadcast),
    Kind("WithdrawalConfirmed", CHAIN, withdrawals.confirmed),
    Kind("WithdrawalFailed", CHAIN, withdrawals.failed),
    Kind("ClockTick", SYSTEM, accounts.not_per_user, per_partition=True),
)}
CHAIN_KINDS: Final = frozenset(k.name for k in KINDS.values() if k.source == CHAIN)


def source_of(kind: str) -> str:
    """The source a kind is taken from; an unknown kind is a user's (and refused as unknown)."""
    spec = KINDS.get(kind)
    return spec.source if spec is not None else USER
