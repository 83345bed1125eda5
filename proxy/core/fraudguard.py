"""The worker's side of fraud detection: rules from the provisioning snapshot,
alerts turned into ``fraud.alert`` events and rows of ``sipledger fraud list``.

``check()`` is what ``ctx.fraud_check()`` calls at an initial INVITE;
``observe()`` sees every call event the worker emits (Core.emit), so that a
call's end releases its concurrency slot and an answered call's duration is
judged, without a hook in the dialog code.  The counting itself is
proxy/core/fraud.py (pure).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..contract import events as ev
from ..infra import clock
from .fraud import FraudAlert, FraudChecker

if TYPE_CHECKING:  # pragma: no cover
    from ..infra.config import FraudSettings

log = logging.getLogger(__name__)

_END_EVENTS = (ev.CallBye, ev.DialogTimeout, ev.DialogTeardown, ev.CallFailed, ev.MediaTimeout,
               ev.SessionExpired)


class FraudGuard:
    def __init__(self, core, settings: "FraudSettings", workers: int = 1):
        self.core = core
        self.settings = settings
        self.checker = FraudChecker(workers=workers)
        self._rules_version = -1
        self._from_tags: dict[str, tuple[str, str | None]] = {}   # call_id -> (from_tag, account)
        self.alerts = 0

    def _sync_rules(self) -> None:
        live = self.core.provisioning
        snapshot = live.snapshot if live is not None else None
        if snapshot is not None and snapshot.version != self._rules_version:
            self.checker.load(tuple(getattr(snapshot, "fraud_rules", ())))
            self._rules_version = snapshot.version

    def check(self, user: str, number: str, call_id: str, from_tag: str, profile: str | None = None) -> str:
        """Count a new call; the action taken: ``none``, ``refused`` or ``block_account``."""
        self._sync_rules()
        alerts = self.checker.check(user, number, profile or self.settings.profile, call_id, clock.time())
        if self.checker.is_open(call_id):
            self._from_tags[call_id] = (from_tag, user)
        critical = any(a.severity == "critical" for a in alerts)
        action = "none"
        if critical and self.settings.block_critical:
            action = "block_account" if self.settings.block_account else "refused"
        for alert in alerts:
            self._raise(alert, from_tag, action if alert.severity == "critical" else "none")
        return action

    def duration_cap(self, call_id: str) -> int:
        """With ``block_critical``, a rule's critical call_duration also caps the
        dialog (seconds; 0: no cap): the proxy ends the call there (BYE both
        ways), and the end raises the critical alert."""
        return self.checker.duration_limit(call_id) if self.settings.block_critical else 0

    def observe(self, event) -> None:
        if isinstance(event, ev.FraudAlert):
            return
        if isinstance(event, ev.CallAnswered):
            self.checker.answered(event.call_id, event.ts_ms / 1000)
        elif isinstance(event, _END_EVENTS):
            ended = self.checker.ended(event.call_id, event.ts_ms / 1000)
            from_tag, _ = self._from_tags.pop(event.call_id, (event.from_tag, None))
            for alert in ended:
                self._raise(alert, from_tag, "none")

    def _raise(self, alert: FraudAlert, from_tag: str, action: str) -> None:
        self.alerts += 1
        events = self.core.events
        now_ms = clock.now_ms()
        log.warning("fraud %s: %s %s=%d (threshold %d) user %s number %s rule %d, action %s",
                    alert.severity, alert.profile, alert.parameter, alert.value, alert.threshold,
                    alert.user, alert.number, alert.rule_id, action)
        self.core.emit(ev.FraudAlert(
            id=ev.new_event_id(), ts_ms=now_ms, call_id=alert.call_id, from_tag=from_tag,
            proxy=events.proxy, worker=events.worker, severity=alert.severity,
            parameter=alert.parameter, value=alert.value, threshold=alert.threshold,  # type: ignore[arg-type]
            user=alert.user, account=alert.user, number=alert.number, prefix=alert.prefix,
            profile=alert.profile, rule_id=alert.rule_id, action=action))  # type: ignore[arg-type]
        share = getattr(self.core.provisioning, "share_fraud_alerts", None)
        if share is not None:
            share([{"at": now_ms / 1000, "severity": alert.severity, "parameter": alert.parameter,
                    "value": alert.value, "threshold": alert.threshold, "user": alert.user,
                    "number": alert.number, "prefix": alert.prefix, "profile": alert.profile,
                    "rule_id": alert.rule_id, "call_id": alert.call_id, "action": action}])
