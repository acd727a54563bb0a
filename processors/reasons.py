"""Reason codes on rejected (or flagged) results: stable strings a client can branch on."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # amounts
    BAD_AMOUNT = "BAD_AMOUNT"  # not a plain decimal number
    BAD_AMOUNT_SCALE = "BAD_AMOUNT_SCALE"  # finer than the asset's smallest unit
    NON_POSITIVE_AMOUNT = "NON_POSITIVE_AMOUNT"
    AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE"  # over 38 digits in minor units
    BAD_FEE = "BAD_FEE"  # fee larger than what it is charged on, or below the asset's fee
    # who and where
    UNKNOWN_USER = "UNKNOWN_USER"  # no OpenAccount seen for this user
    USER_EXISTS = "USER_EXISTS"
    UNKNOWN_ASSET = "UNKNOWN_ASSET"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"  # not spot / margin / futures / staking / isolated:<PAIR>
    SAME_ACCOUNT = "SAME_ACCOUNT"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"  # frozen by risk: only chain events still apply
    WRONG_PARTITION = "WRONG_PARTITION"  # a batch record holding a user of another partition: producer bug
    WRONG_SOURCE = "WRONG_SOURCE"  # a chain event not on the chain-events topic (only the watcher writes that)
    MALFORMED_COMMAND = "MALFORMED_COMMAND"  # fields the schema allows but the business does not
    ID_REUSED = "ID_REUSED"  # an id its source already used for another input (another kind or body)
    INTERNAL_ERROR = "INTERNAL_ERROR"  # the engine failed on this input: quarantined to the dead-letter topic
    NOT_FROZEN = "NOT_FROZEN"  # lifting a risk freeze from an account that is not frozen
    # bounds on what one user can make the engine keep
    TOO_MANY_OPEN_HOLDS = "TOO_MANY_OPEN_HOLDS"
    TOO_MANY_OPEN_WITHDRAWALS = "TOO_MANY_OPEN_WITHDRAWALS"
    TOO_MANY_SUB_ACCOUNTS = "TOO_MANY_SUB_ACCOUNTS"  # sub-accounts holding funds
    # balances and holds
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    UNKNOWN_HOLD = "UNKNOWN_HOLD"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    HOLD_EXCEEDED = "HOLD_EXCEEDED"  # a fill or release larger than what is left of the hold
    ASSET_MISMATCH = "ASSET_MISMATCH"  # a fill paying another asset or account than its order holds
    FILL_SETTLED = "FILL_SETTLED"  # this fill id was already settled on this order side
    ORDER_CLOSED = "ORDER_CLOSED"  # the order was filled or released: it takes no fill, its id is used
    # chain
    UNKNOWN_CHAIN = "UNKNOWN_CHAIN"
    BAD_ADDRESS = "BAD_ADDRESS"
    BAD_DEPOSIT_ID = "BAD_DEPOSIT_ID"  # the input id must be chain:tx_hash:log_index
    UNKNOWN_DEPOSIT = "UNKNOWN_DEPOSIT"
    BELOW_MINIMUM = "BELOW_MINIMUM"  # on a deposit: recorded, not credited; on a withdrawal: refused
    # withdrawals
    UNKNOWN_WITHDRAWAL = "UNKNOWN_WITHDRAWAL"
    DUPLICATE_WITHDRAWAL_ID = "DUPLICATE_WITHDRAWAL_ID"
    BAD_WITHDRAWAL_STATE = "BAD_WITHDRAWAL_STATE"  # e.g. approving one already broadcast
    ALREADY_APPROVED = "ALREADY_APPROVED"  # the same approver twice
    WITHDRAWAL_CLOSED = "WITHDRAWAL_CLOSED"  # a chain event for a withdrawal that ended (and was pruned)
    # margin
    BAD_PRICE = "BAD_PRICE"  # a mark price that is not a positive decimal of at most 18 decimals, or beyond any market
    NOT_A_MARGIN_ACCOUNT = "NOT_A_MARGIN_ACCOUNT"  # loans are for margin and isolated:<PAIR> accounts only
    NO_LENDING_POOL = "NO_LENDING_POOL"  # the asset cannot be borrowed, or its pool's rate is not known yet
    PRICE_UNAVAILABLE = "PRICE_UNAVAILABLE"  # an asset of the account has no mark price, or only a stale one
    MARGIN_LEVEL_TOO_LOW = "MARGIN_LEVEL_TOO_LOW"  # the loan or the transfer out would cross the tier's line
    NOTHING_TO_REPAY = "NOTHING_TO_REPAY"  # no loan of this asset in this account
    ACCOUNT_LIQUIDATING = "ACCOUNT_LIQUIDATING"  # the margin account is being liquidated: no orders, loans, transfers
    NOT_LIQUIDATABLE = "NOT_LIQUIDATABLE"  # re-checked at the current price, the account is above its liquidation line
    ALREADY_LIQUIDATING = "ALREADY_LIQUIDATING"  # a liquidation of the account is under way (one per crossing)
    UNKNOWN_LIQUIDATION_ORDER = "UNKNOWN_LIQUIDATION_ORDER"  # no open liquidation order has this id (filled, or never)
    TOO_MANY_FILLS = "TOO_MANY_FILLS"  # a liquidation order took liquidation_fills_max fills: the rest in one
    # flags on accepted inputs
    REVERSAL_SHORTFALL = "REVERSAL_SHORTFALL"  # a reverted deposit was already spent: debt booked, account frozen
    PARKED = "PARKED"  # a chain event for a withdrawal or an account not there yet: applied when it appears
    PARKED_EXPIRED = "PARKED_EXPIRED"  # a parked chain event whose withdrawal or account never came: an alert
