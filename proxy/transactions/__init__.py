"""SIP transaction layer (RFC 3261 §17, RFC 6026), sans-I/O.

Each transaction is a state machine: feed it messages, timer firings and
transport errors; it returns actions (``Transmit``, ``StartTimer`` …) for the
runtime to carry out.  ``keys`` maps messages to transactions.
"""
from .actions import (
                      TERMINATED,
                      TIMED_OUT,
                      TRANSPORT_FAILED,
                      Action,
                      PassUp,
                      StartTimer,
                      StopTimer,
                      Terminated,
                      TimedOut,
                      Transmit,
                      TransportFailed,
)
from .base import ClientTransaction, Event, ServerTransaction, State, Transaction, TransactionStateError
from .invite_client import InviteClientTransaction, build_non2xx_ack
from .invite_server import InviteServerTransaction
from .keys import MAGIC_COOKIE, client_key, invite_key_for_cancel, new_branch, server_key
from .noninvite_client import NonInviteClientTransaction
from .noninvite_server import NonInviteServerTransaction
from .timers import TimerConfig, TransportTimers

__all__ = [
    "Action", "Transmit", "StartTimer", "StopTimer", "PassUp", "TimedOut", "TransportFailed",
    "Terminated", "TIMED_OUT", "TRANSPORT_FAILED", "TERMINATED",
    "TimerConfig", "TransportTimers",
    "State", "Event", "Transaction", "ClientTransaction", "ServerTransaction",
    "TransactionStateError",
    "InviteClientTransaction", "InviteServerTransaction",
    "NonInviteClientTransaction", "NonInviteServerTransaction", "build_non2xx_ack",
    "server_key", "invite_key_for_cancel", "client_key", "new_branch", "MAGIC_COOKIE",
]
