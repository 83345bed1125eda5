"""One worker's SIP counters: plain integers, bumped on the hot path, read once a second.

Sans-I/O and dependency-free on purpose: a message costs a dict lookup and an
integer add here, never a Prometheus call.  The worker's metrics task
(proxy/runtime/metrics.py) copies the figures into prometheus-client every
second.  Labels an outsider could choose are bounded: a method we do not know
counts as ``OTHER``, a status code only by its class.  Names follow
Kamailio's statistics groups (core, tm, sl, dialog, auth); docs/metrics.md.
"""
from __future__ import annotations

# the methods a label may carry; anything else an outsider sends is OTHER
METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE",
                     "PRACK", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PUBLISH"})
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


def method_label(method: str | None) -> str:
    return method if method in METHODS else "OTHER"


def code_class(status: int) -> str | None:
    """'1xx' … '6xx'; None for a status outside 100-699."""
    return CLASSES[status // 100 - 1] if 100 <= status < 700 else None


class CoreStats:
    """Monotonic counters of one worker (gauges are read from the tables themselves)."""

    __slots__ = ("rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies", "drop_replies",
                 "bad_msg", "sl_replies", "tm_replies", "tm_created", "dialogs_processed",
                 "dialogs_failed", "teardowns", "auth_challenges", "auth_failures", "auth_successes")

    def __init__(self) -> None:
        self.rcv_requests: dict[str, int] = {}     # method -> received (retransmissions too)
        self.rcv_replies = [0] * 7                 # status // 100 -> replies received
        self.fwd_requests: dict[str, int] = {}     # method -> relayed downstream (one per branch)
        self.fwd_replies = [0] * 7                 # status // 100 -> relayed upstream
        self.drop_replies = 0                      # replies matching no transaction, not relayed
        self.bad_msg = 0                           # messages that did not parse
        self.sl_replies: dict[int, int] = {}       # status -> stateless replies (bounded: ours)
        self.tm_replies = [0] * 7                  # status // 100 -> replies sent by transactions
        self.tm_created = 0                        # server + client transactions created
        self.dialogs_processed = 0                 # dialogs confirmed by a 2xx
        self.dialogs_failed = 0                    # initial INVITEs answered with a final non-2xx
        self.teardowns: dict[str, int] = {}        # reason -> dialogs ended by the proxy (BYE both ways)
        self.auth_challenges = 0                   # 401/407 challenges sent
        self.auth_failures = 0                     # credentials that did not verify
        self.auth_successes = 0

    # the hot-path bumps: a lookup and an add each
    def request_in(self, method: str | None) -> None:
        key = method_label(method)
        self.rcv_requests[key] = self.rcv_requests.get(key, 0) + 1

    def reply_in(self, status: int) -> None:
        if 100 <= status < 700:
            self.rcv_replies[status // 100] += 1

    def request_out(self, method: str | None) -> None:
        key = method_label(method)
        self.fwd_requests[key] = self.fwd_requests.get(key, 0) + 1

    def reply_relayed(self, status: int) -> None:
        if 100 <= status < 700:
            self.fwd_replies[status // 100] += 1
            self.tm_replies[status // 100] += 1

    def reply_local(self, status: int) -> None:
        if 100 <= status < 700:
            self.tm_replies[status // 100] += 1

    def reply_stateless(self, status: int) -> None:
        self.sl_replies[status] = self.sl_replies.get(status, 0) + 1

    def teardown(self, reason: str) -> None:
        # reasons are the proxy's own words (and call.control's): bounded anyway
        key = reason[:40] if reason in self.teardowns or len(self.teardowns) < 32 else "other"
        self.teardowns[key] = self.teardowns.get(key, 0) + 1

    def by_class(self, counts: list[int]) -> dict[str, int]:
        return {CLASSES[i - 1]: counts[i] for i in range(1, 7)}
