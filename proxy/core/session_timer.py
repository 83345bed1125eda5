"""Session timers at the proxy (RFC 4028): dialogs nobody refreshes end.

A call whose phone vanished without a BYE is billed until the maximum
duration.  When the parties negotiated a session timer, the refresher must
send a re-INVITE or UPDATE within every Session-Expires interval; the proxy
watches for it and, when none came, ends the dialog itself: BYE both ways
with ``Reason: SIP;cause=408;text="session timer expired"`` and a
``SessionExpired`` event.

What the proxy does, by RFC 4028 section:

- §8.1, initial INVITE (``check_invite``, called by the routing context before
  it forwards) and in-dialog re-INVITE/UPDATE (``check_refresh``, called by the
  engine): a Session-Expires below our Min-SE is answered 422 with our
  Min-SE; a Min-SE below ours is raised to ours; with ``[session_timer]
  insert`` an initial INVITE that carries no Session-Expires gets ours and our
  Min-SE.
  Supported: timer is never added: it states what the UAC implements, which
  only the UAC knows (when it lacks it, the UAS becomes the refresher, §9).
- §8.2, the 2xx (``confirmed``): its Session-Expires (and refresher) is the
  session interval.  A 2xx without one, to an INVITE with one from a UAC that
  supports timer, gets ``Session-Expires: N;refresher=uac`` and
  ``Require: timer`` added, so the caller refreshes.  No Session-Expires at
  the end: nobody refreshes, the proxy watches nothing.
- §10: a re-INVITE or UPDATE passing through, in either direction, is a
  refresh (a new Session-Expires in it becomes the interval).  The party not
  refreshing sends its own BYE at expiry − min(32, expiry/3); the proxy waits
  for the full interval since the last refresh, then ends the dialog: an
  endpoint that implements timers always goes first.

Per-dialog state lives in ``dialog.session``; the timer is the core's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..contract import events as ev
from ..infra import clock
from ..infra.config import SessionTimerSettings
from ..sip.build import reason_header
from ..sip.headers import parse_params
from ..sip.message import SipMessage
from .dialogs import Dialog, DialogState
from .ports import TimerHandle

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Core

__all__ = ["EXPIRED_REASON", "Session", "SessionTimer", "parse_session_expires"]

EXPIRED_REASON = reason_header(408, "session timer expired")
MAX_INTERVAL = 86400 * 7       # larger values are read as this (bounded timers)
REFRESHING = frozenset({"INVITE", "UPDATE"})


def _seconds(text: str | None) -> int | None:
    value = (text or "").strip()
    if not value or len(value) > 10 or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), MAX_INTERVAL)


def parse_session_expires(msg: SipMessage) -> tuple[int, str | None] | None:
    """(delta-seconds, refresher or None) of a Session-Expires header; None when
    absent or malformed (a malformed one is ignored, as if absent)."""
    value = msg.get("session-expires")
    if value is None:
        return None
    number, _, params = value.partition(";")
    seconds = _seconds(number)
    if seconds is None or seconds == 0:
        return None
    refresher = parse_params(";" + params).get("refresher") if params else None
    refresher = refresher.strip().lower() if refresher else None
    return seconds, refresher if refresher in ("uac", "uas") else None


def _supports_timer(msg: SipMessage) -> bool:
    return any(opt.strip().lower() == "timer" for value in msg.values("supported")
               for opt in value.split(","))


class Session:
    """One dialog's negotiated timer."""
    __slots__ = ("interval", "refresher", "last_refresh_ms", "timer")

    def __init__(self, interval: int, refresher: str, last_refresh_ms: int):
        self.interval = interval
        self.refresher = refresher          # "uac" (the caller) or "uas" (the callee)
        self.last_refresh_ms = last_refresh_ms
        self.timer: TimerHandle | None = None


class SessionTimer:
    """A DialogWatcher (proxy/core/dialogs.py) plus the initial-INVITE check."""

    def __init__(self, core: "Core", settings: SessionTimerSettings | None = None):
        self.core = core
        self.settings = settings or SessionTimerSettings()

    # -- the initial INVITE, before it is forwarded ---------------------------------
    def check_invite(self, request: SipMessage) -> tuple[int, str, list[tuple[str, str]]] | None:
        """None to forward (headers adjusted), else the reply: 422 with our Min-SE."""
        settings = self.settings
        if request.method != "INVITE" or not (settings.enabled or settings.insert):
            return None
        if settings.insert and request.get("session-expires") is None:
            request.set("session-expires", str(settings.session_expires_seconds))
            request.set("min-se", str(settings.min_se_seconds))
            return None
        return self._check_interval(request) if settings.enabled else None

    def check_refresh(self, request: SipMessage) -> tuple[int, str, list[tuple[str, str]]] | None:
        """The same rule for an in-dialog re-INVITE or UPDATE (nothing inserted)."""
        if request.method not in REFRESHING or not self.settings.enabled:
            return None
        return self._check_interval(request)

    def _check_interval(self, request: SipMessage) -> tuple[int, str, list[tuple[str, str]]] | None:
        """422 when the asked Session-Expires is below our Min-SE; else a lower
        Min-SE is raised to ours (§8.1) and the request goes on."""
        ours = self.settings.min_se_seconds
        asked = parse_session_expires(request)
        if asked is None:
            return None
        if asked[0] < ours:
            return 422, "Session Interval Too Small", [("min-se", str(ours))]
        their_min = _seconds((request.get("min-se") or "").partition(";")[0])
        if their_min is None or their_min < ours:
            request.set("min-se", str(ours))
        return None

    # -- DialogWatcher --------------------------------------------------------------
    def confirmed(self, dialog: "Dialog", invite: SipMessage, response: SipMessage) -> None:
        if not self.settings.enabled:
            return
        negotiated = parse_session_expires(response)
        if negotiated is None:
            asked = parse_session_expires(invite)
            if asked is None or not _supports_timer(invite):
                return                      # nobody refreshes: nothing to watch
            # §8.2: the UAS does not do timers, the UAC does: it refreshes
            response.set("session-expires", f"{asked[0]};refresher=uac")
            response.add("require", "timer")
            negotiated = asked[0], "uac"
        interval, refresher = negotiated
        session = Session(interval, refresher or "uas", clock.now_ms())
        dialog.session = session
        self._arm(dialog, session)

    def request(self, dialog: "Dialog", request: SipMessage, by: str | None) -> None:
        session = dialog.session
        if not isinstance(session, Session) or request.method not in REFRESHING:
            return
        asked = parse_session_expires(request)
        if asked is not None and asked[0] >= self.settings.min_se_seconds:
            session.interval = asked[0]
            if asked[1] is not None:
                session.refresher = asked[1]
        session.last_refresh_ms = clock.now_ms()
        self._arm(dialog, session)

    def ended(self, dialog: "Dialog") -> None:
        session = dialog.session
        if isinstance(session, Session) and session.timer is not None:
            session.timer.cancel()
            session.timer = None

    # -- expiry ---------------------------------------------------------------------
    def _arm(self, dialog: "Dialog", session: Session) -> None:
        if session.timer is not None:
            session.timer.cancel()
        session.timer = self.core.effects.call_later(session.interval, self._expired, dialog)

    def _expired(self, dialog: "Dialog") -> None:
        session = dialog.session
        if not isinstance(session, Session):
            return
        session.timer = None
        if dialog.state is not DialogState.CONFIRMED:
            return
        core = self.core
        core.dialogs.end_by_proxy(dialog, EXPIRED_REASON, "session_expired")
        if dialog.billed:
            core.emit(core.events.for_dialog(ev.SessionExpired, dialog,
                                             session_expires_s=session.interval,
                                             last_refresh_ms=session.last_refresh_ms, leg=dialog.leg))
