"""The media relay of calls: one rtpengine session per call, sans-I/O.

rtpengine (proxy/media/ng.py) rewrites SDP so that both parties send their
RTP to it; it then forwards each party's packets to the other.  This module
decides when to ask it, as OpenSIPS scripts call rtpengine_offer /
rtpengine_answer / rtpengine_delete, but automatically, by policy:

* ``offer`` when an initial INVITE with SDP is relayed (proxy/script/context.py
  holds the INVITE until the rewritten SDP is in it), and again for a
  re-INVITE or UPDATE with SDP inside a relayed dialog (engine.py);
* ``answer`` when a provisional or 2xx response with SDP goes back to the
  offerer (proxy/core/forwarding.py hands every response of such a call to its
  ``Exchange``, which keeps them in order while an answer is out);
* ``query`` then ``delete`` when the call ends (BYE, CANCEL, a final failure,
  a teardown by the proxy): the query's counters become ``MediaStats``;
* while a relayed dialog is up, ``query`` every ``poll_seconds``: a party
  silent too long ends the call (``MediaTimeout``, BYE both ways).

Failure policy: when no rtpengine answers an offer or an answer (or it
refuses), the message goes on unchanged and a warning is logged (the log
layer rate-limits repeated lines).  Fail open: a call between phones that can
reach each other still works, and a relay outage never turns into an outage
of all calls; only NATed calls lose their audio meanwhile.

Late offer (an INVITE without SDP, the offer in the 2xx, the answer in the
ACK) is relayed unchanged: no session is made for it.

Rule 1 (as in h11): every state change of a session is in ``TRANSITIONS``.
"""
from __future__ import annotations

import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..contract import events as ev
from ..infra import clock
from ..infra.config import MediaSettings
from ..media.ng import CallStats
from ..sip.build import reason_header
from ..sip.message import SipMessage
from ..sip.uri import parse_name_addr
from .nat import sender_nated
from .ports import MediaResult, Target, TimerHandle

if TYPE_CHECKING:  # pragma: no cover
    from .dialogs import Dialog
    from .engine import Core

log = logging.getLogger("sipledger.media")

# what every offer and answer asks of rtpengine besides the media lines, as OpenSIPS
# scripts do: the o= and the session-level c= lines name the relay too
SDP_OPTIONS: dict[str, Any] = {"replace": ["origin", "session-connection"]}
MEDIA_TIMEOUT_CAUSE = 408          # Reason: SIP;cause=408 — the media timed out (RFC 3326)
ANSWER_CACHE = 8                   # rewritten answers kept per call (2xx retransmissions, forks)
STAMP_RESOLUTION_S = 1.0          # rtpengine's "last packet" times are whole Unix seconds
UNKNOWN_CALL = "unknown call-id"   # rtpengine's error-reason once its own timeout deleted the call


class Phase(Enum):
    OFFERING = "offering"      # the offer is out; the INVITE waits for it
    EARLY = "early"            # offered; no answer yet
    ACTIVE = "active"          # answered: media flows through the relay
    CANCELLED = "cancelled"    # the call ended while the offer was out: delete when it returns
    ENDING = "ending"          # query + delete out
    ENDED = "ended"


# (phase, input) -> next phase; inputs not listed leave the phase unchanged.
TRANSITIONS = {
    (Phase.OFFERING, "offered"): Phase.EARLY,
    (Phase.OFFERING, "failed"): Phase.ENDED,       # relayed unchanged: nothing to delete
    (Phase.OFFERING, "end"): Phase.CANCELLED,
    (Phase.CANCELLED, "offered"): Phase.ENDING,
    (Phase.CANCELLED, "failed"): Phase.ENDED,
    (Phase.EARLY, "answered"): Phase.ACTIVE,
    (Phase.EARLY, "end"): Phase.ENDING,
    (Phase.ACTIVE, "end"): Phase.ENDING,
    (Phase.ENDING, "deleted"): Phase.ENDED,
}


class Session:
    """One call's media on one rtpengine."""
    __slots__ = ("call_id", "caller_tag", "phase", "relay", "dialog", "answers", "last_stats",
                 "poll", "polling", "leg", "heard")

    def __init__(self, call_id: str, caller_tag: str):
        self.call_id = call_id
        self.caller_tag = caller_tag
        self.phase = Phase.OFFERING
        self.relay = ""
        self.dialog: Dialog | None = None
        self.answers: dict[tuple[str, bytes], bytes] = {}   # (to-tag, SDP) -> rewritten SDP
        self.last_stats: CallStats | None = None
        self.poll: TimerHandle | None = None
        self.polling = False           # a query of the media-timeout poll is out
        self.leg: int | None = None
        self.heard: dict[str, Heard] = {}   # tag -> what the polls saw of that party's packets

    def apply(self, event: str) -> Phase:
        self.phase = TRANSITIONS.get((self.phase, event), self.phase)
        return self.phase


# -- pure rules ------------------------------------------------------------------------------

def has_sdp(msg: SipMessage) -> bool:
    kind = (msg.get("content-type") or "").split(";", 1)[0].strip().lower()
    return kind == "application/sdp" and bool(msg.body.strip())


def relay_wanted(policy: str, request: SipMessage, source: Target, targets: list[Target]) -> bool:
    """``policy`` "always": every call with SDP; "nat": only when the caller or a target is NATed."""
    if not has_sdp(request):
        return False
    if policy == "always":
        return True
    return any(t.nat for t in targets) or sender_nated(request, source)


def sdp_options(nat_source: str | None) -> dict[str, Any]:
    """rtpengine options for one party's SDP.  A party behind a NAT wrote an address
    nobody can reach: rtpengine sends to where its signalling came from (the SDP's
    port, the NAT's address) until its first RTP packet shows the real source."""
    if not nat_source:
        return SDP_OPTIONS
    family = "IP6" if ":" in nat_source else "IP4"
    return {**SDP_OPTIONS, "flags": ["SIP-source-address"], "received-from": [family, nat_source.strip("[]")]}


def _nat_source(dialog: "Dialog | None", tag: str) -> str | None:
    """Where a NATed party of a dialog is reached, by its tag; None when not NATed."""
    if dialog is None:
        return None
    side = dialog.caller if tag == dialog.caller_tag else dialog.callee if tag == dialog.callee_tag else None
    if side is None or not side.nat:
        return None
    return side.target.party or side.target.host      # party: reached through another instance


def clock_ms(host_seconds: float, host_now: float, now_ms: int) -> int:
    """A host Unix time (rtpengine stamps packets with the host's clock) on the
    project's clock (proxy.infra.clock, which tests may shift): the distance to
    now is what is true on both, so keep it rather than the absolute value."""
    return now_ms - int(round((host_now - host_seconds) * 1000))


def last_packets(stats: CallStats, tag: str) -> float:
    """The Unix time of the last RTP packet a party sent (0: none); RTCP does not count."""
    return max((s.last_packet for s in stats.streams if s.tag == tag and not s.rtcp), default=0)


def silence(stats: CallStats, caller_tag: str, callee_tag: str, host_now: float,
            rtp_timeout: float, one_way_timeout: float) -> tuple[str, float] | None:
    """(who is silent: "both" | "caller" | "callee", the last media time) or None.

    A party that never sent counts from the call's creation on the relay.
    Both silent for ``rtp_timeout`` ends the call; one silent for
    ``one_way_timeout`` while the other still sends (within that time) too."""
    floor = stats.created or host_now
    caller = max(last_packets(stats, caller_tag), floor)
    callee = max(last_packets(stats, callee_tag), floor)
    # rtpengine stamps whole seconds (floored): a packet stamped T may have come at
    # T + 0.99, so silence is counted from the end of that second, never too early
    caller_quiet = host_now - caller - STAMP_RESOLUTION_S
    callee_quiet = host_now - callee - STAMP_RESOLUTION_S
    if caller_quiet >= rtp_timeout and callee_quiet >= rtp_timeout:
        return "both", max(caller, callee)
    if callee_quiet >= one_way_timeout > caller_quiet:
        return "callee", callee
    if caller_quiet >= one_way_timeout > callee_quiet:
        return "caller", caller
    return None


class Heard:
    """One party's packet count as the media-timeout polls saw it (host seconds)."""
    __slots__ = ("packets", "polled_at", "grew_after", "grew_by")

    def __init__(self, polled_at: float):
        self.packets = 0
        self.polled_at = polled_at
        self.grew_after = 0.0      # the last growth of the count happened after this poll ...
        self.grew_by = 0.0         # ... and before this one (0: never seen growing)

    def observe(self, packets: int, now: float) -> None:
        if packets > self.packets:
            self.packets, self.grew_after, self.grew_by = packets, self.polled_at, now
        self.polled_at = now


def last_heard(stamp: float, heard: Heard | None) -> float:
    """When a party's last packet came (host seconds), as well as we know it.
    rtpengine stamps whole seconds, so it came in [stamp, stamp + 1); the polls
    bound it too (after the poll before the one that saw the count grow, before
    that one).  The middle of what is left: off by half of it at most (0.5 s, or
    half the poll interval if smaller), where the bare stamp was up to 1 s early
    and a call with under a second of media could end before its answer."""
    if not stamp:
        return stamp
    low, high = stamp, stamp + STAMP_RESOLUTION_S
    if heard is not None and heard.grew_by:
        low, high = max(low, heard.grew_after), min(high, heard.grew_by)
    return (low + max(low, high)) / 2


def flow(stats: CallStats | None, tag: str, host_now: float, now_ms: int) -> ev.MediaFlow:
    """What one party sent, from a query's counters."""
    if stats is None:
        return ev.MediaFlow()
    streams = [s for s in stats.streams if s.tag == tag and not s.rtcp]
    last = max((s.last_packet for s in streams), default=0)
    packets = sum(s.packets for s in streams)
    # quality of what the party sent: rtpengine's per-SSRC averages (from RTCP reports)
    own = {s.ssrc for s in streams if s.ssrc}
    quality = next((q for q in stats.ssrcs if q.ssrc in own), None)
    return ev.MediaFlow(
        packets=packets, bytes=sum(s.bytes for s in streams), errors=sum(s.errors for s in streams),
        # rtpengine gives loss as an average percentage: as a count of this party's packets
        lost=round(packets * quality.packet_loss / 100) if quality and quality.packet_loss is not None else None,
        jitter_ms=round(quality.jitter) if quality and quality.jitter is not None else None,
        mos_x10=round(quality.mos * 10) if quality and quality.mos is not None else None,
        last_packet_ms=clock_ms(last, host_now, now_ms) if last else 0)


def _to_tag(msg: SipMessage) -> str:
    try:
        return parse_name_addr(msg.get("to") or "").tag or ""
    except ValueError:
        return ""


def _from_tag(msg: SipMessage) -> str:
    try:
        return parse_name_addr(msg.get("from") or "").tag or ""
    except ValueError:
        return ""


# -- the relay of one worker ----------------------------------------------------------------------

class MediaRelay:
    """Every media session of one worker's core; a DialogWatcher (proxy/core/dialogs.py)."""

    def __init__(self, core: "Core", settings: MediaSettings,
                 host_clock: Callable[[], float] = time.time):
        self.core = core
        self.settings = settings
        self.host_clock = host_clock           # the host's Unix time (rtpengine's timestamps)
        self.sessions: dict[str, Session] = {}
        self.polls_in_flight = 0
        core.dialogs.watchers.append(self)

    # -- the initial offer (proxy/script/context.py) -------------------------------------------
    def wanted(self, request: SipMessage, source: Target, targets: list[Target]) -> bool:
        return request.method == "INVITE" and request.call_id not in self.sessions and \
            relay_wanted(self.settings.policy, request, source, targets)

    def offer(self, request: SipMessage, source: Target, done: Callable[[Session | None], None]) -> None:
        """Offer the INVITE's SDP; its body is rewritten in place before
        ``done(session)`` (None: relay it unchanged, the relay failed)."""
        session = Session(request.call_id, _from_tag(request))
        options = sdp_options(source.host if sender_nated(request, source) else None)
        self.sessions[session.call_id] = session

        def offered(result: MediaResult) -> None:
            sdp = self._sdp(result, "offer", session.call_id)
            if sdp is None:
                session.apply("failed")
                self._forget(session)
                done(None)
                return
            session.relay = result.relay
            if session.apply("offered") is Phase.ENDING:     # the call ended meanwhile
                self._finish(session)
                return
            request.body = sdp
            done(session)
        self.core.effects.media("offer", {"call_id": session.call_id, "from_tag": session.caller_tag,
                                          "sdp": request.body.decode("utf-8", "surrogateescape"),
                                          "options": options}, offered)

    def exchange(self, session: Session, offerer_tag: str, initial: bool) -> "Exchange":
        return Exchange(self, session, offerer_tag, initial)

    def abandon(self, call_id: str) -> None:
        """The call ended before it was relayed (CANCEL while the offer was out)."""
        session = self.sessions.get(call_id)
        if session is not None:
            self.end(session)

    # -- re-INVITE / UPDATE in a relayed dialog (engine.py) --------------------------------------
    def reoffer(self, dialog: "Dialog", request: SipMessage,
                done: Callable[["Exchange | None"], None]) -> bool:
        """Offer a new SDP inside a relayed dialog; False (and no call of ``done``)
        when the dialog is not relayed or the request has no SDP."""
        session = dialog.media
        if not isinstance(session, Session) or session.phase is not Phase.ACTIVE or not has_sdp(request):
            return False
        offerer = _from_tag(request)

        def offered(result: MediaResult) -> None:
            sdp = self._sdp(result, "re-offer", session.call_id)
            if sdp is None:
                done(None)
                return
            request.body = sdp
            done(self.exchange(session, offerer, initial=False))
        self.core.effects.media("offer", {"call_id": session.call_id, "from_tag": offerer,
                                          "sdp": request.body.decode("utf-8", "surrogateescape"),
                                          "options": sdp_options(_nat_source(dialog, offerer))}, offered)
        return True

    # -- answers (forwarding.py, via Exchange) ---------------------------------------------------------
    def answer(self, session: Session, offerer_tag: str, resp: SipMessage,
               done: Callable[[bytes | None], None]) -> None:
        to_tag = _to_tag(resp)
        key = (to_tag, resp.body)
        cached = session.answers.get(key)
        if cached is not None:
            done(cached)                        # a 2xx retransmission: the same rewritten SDP
            return

        def answered(result: MediaResult) -> None:
            sdp = self._sdp(result, "answer", session.call_id)
            if sdp is not None:
                if len(session.answers) >= ANSWER_CACHE:
                    session.answers.pop(next(iter(session.answers)))
                session.answers[key] = sdp
                if session.apply("answered") is Phase.ACTIVE:
                    self._start_polling(session)
            done(sdp)
        self.core.effects.media("answer", {"call_id": session.call_id, "from_tag": offerer_tag,
                                           "to_tag": to_tag,
                                           "sdp": resp.body.decode("utf-8", "surrogateescape"),
                                           "options": sdp_options(_nat_source(session.dialog, to_tag))},
                                answered)

    def cached_answer(self, dialog: "Dialog", resp: SipMessage) -> bytes | None:
        """The rewritten SDP of a 2xx retransmitted after its transaction ended (engine.py)."""
        session = dialog.media
        if not isinstance(session, Session):
            return None
        return session.answers.get((_to_tag(resp), resp.body))

    def _sdp(self, result: MediaResult, what: str, call_id: str) -> bytes | None:
        reply = result.reply
        if reply is None or not reply.ok or not reply.sdp:
            why = result.error or (f"{reply.result}: {reply.error_reason}" if reply is not None else "no reply")
            log.warning("media relay %s failed, SDP relayed unchanged: %.200s", what, why)
            return None
        return reply.sdp.encode("utf-8", "surrogateescape")

    # -- DialogWatcher ----------------------------------------------------------------------------------
    def confirmed(self, dialog: "Dialog", invite: SipMessage, response: SipMessage) -> None:
        session = self.sessions.get(dialog.call_id)
        if session is None or not dialog.billed or session.dialog is not None:
            return                       # not relayed, or an extra fork (deleted with the call)
        session.dialog = dialog
        session.leg = dialog.leg
        dialog.media = session
        self._start_polling(session)

    def request(self, dialog: "Dialog", request: SipMessage, by: str | None) -> None:
        pass                             # re-INVITEs come through ``reoffer`` (engine.py)

    def ended(self, dialog: "Dialog") -> None:
        session = dialog.media
        if isinstance(session, Session):
            self.end(session)

    # -- the end: query, MediaStats, delete ----------------------------------------------------
    def end(self, session: Session, stats: CallStats | None = None) -> None:
        """The call is over: its counters (``stats`` if just read, else a query) as
        MediaStats, then delete."""
        if session.phase in (Phase.ENDING, Phase.ENDED) or session.apply("end") is not Phase.ENDING:
            return                       # ending already, or waiting for the offer (deleted then)
        self._stop_polling(session)
        if stats is not None:
            self._emit_stats(session, stats)
            self._delete(session)
            return

        def queried(result: MediaResult) -> None:
            reply = result.reply
            if reply is not None and reply.ok and reply.stats is not None:
                self._emit_stats(session, reply.stats)
            self._delete(session)
        self.core.effects.media("query", {"call_id": session.call_id}, queried)

    def _finish(self, session: Session) -> None:
        """Ended while the offer was out: nothing flowed, delete at once."""
        self._delete(session)

    def _delete(self, session: Session) -> None:
        def deleted(result: MediaResult) -> None:
            session.apply("deleted")
            self._forget(session)
        self.core.effects.media("delete", {"call_id": session.call_id}, deleted)

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.call_id) is session:
            del self.sessions[session.call_id]
        if session.dialog is not None and session.dialog.media is session:
            session.dialog.media = None       # no cycle left: both die by reference counting

    def _emit_stats(self, session: Session, stats: CallStats) -> None:
        host_now, now_ms = self.host_clock(), clock.now_ms()
        dialog = session.dialog
        callee_tag = dialog.callee_tag if dialog is not None else next(
            (s.tag for s in stats.streams if s.tag and s.tag != session.caller_tag), "")
        core = self.core
        core.emit(ev.MediaStats(
            id=ev.new_event_id(), ts_ms=now_ms, call_id=session.call_id, from_tag=session.caller_tag,
            to_tag=callee_tag or None, proxy=core.events.proxy, worker=core.events.worker,
            leg=session.leg, relay=session.relay,
            caller=flow(stats, session.caller_tag, host_now, now_ms),
            callee=flow(stats, callee_tag, host_now, now_ms)))

    # -- media timeout ----------------------------------------------------------------------------
    def _start_polling(self, session: Session) -> None:
        if session.phase is not Phase.ACTIVE or session.dialog is None or session.poll is not None:
            return
        # spread the polls of calls answered together over one interval
        spread = (zlib.crc32(session.call_id.encode("utf-8", "surrogateescape")) % 1000) / 1000
        self._schedule_poll(session, self.settings.poll_seconds * (0.5 + spread / 2))

    def _schedule_poll(self, session: Session, delay: float) -> None:
        session.poll = self.core.effects.call_later(delay, self._poll, session)

    def _stop_polling(self, session: Session) -> None:
        if session.poll is not None:
            session.poll.cancel()
            session.poll = None

    def _poll(self, session: Session) -> None:
        session.poll = None
        if session.phase is not Phase.ACTIVE:
            return
        if self.polls_in_flight >= self.settings.max_polls_in_flight:
            self._schedule_poll(session, self.settings.poll_seconds)   # bounded cost: next round
            return
        self.polls_in_flight += 1
        session.polling = True
        self.core.effects.media("query", {"call_id": session.call_id},
                                lambda result: self._polled(session, result))

    def _polled(self, session: Session, result: MediaResult) -> None:
        self.polls_in_flight -= 1
        session.polling = False
        if session.phase is not Phase.ACTIVE:
            return
        reply = result.reply
        host_now = self.host_clock()
        verdict: tuple[str, float] | None = None
        if reply is not None and reply.result == "error" and UNKNOWN_CALL in reply.error_reason.lower():
            # rtpengine's own timeout deleted the call: every stream was silent
            last = session.last_stats
            when = max(last_packets(last, session.caller_tag),
                       last_packets(last, session.dialog.callee_tag if session.dialog else "")) \
                if last is not None else 0
            verdict = ("both", when or host_now)
        elif reply is not None and reply.ok and reply.stats is not None:
            session.last_stats = reply.stats
            dialog = session.dialog
            callee_tag = dialog.callee_tag if dialog else ""
            for tag in (session.caller_tag, callee_tag):
                packets = sum(s.packets for s in reply.stats.streams if s.tag == tag and not s.rtcp)
                session.heard.setdefault(tag, Heard(reply.stats.created or host_now)).observe(packets, host_now)
            verdict = silence(reply.stats, session.caller_tag, callee_tag,
                              host_now, self.settings.rtp_timeout_seconds,
                              self.settings.one_way_timeout_seconds)
        # no reply (relay down): the call goes on, polled again
        if verdict is None:
            self._schedule_poll(session, self.settings.poll_seconds)
            return
        self._timed_out(session, verdict[0], self._last_media(session, verdict), host_now,
                        reply.stats if reply is not None and reply.ok else None)

    def _last_media(self, session: Session, verdict: tuple[str, float]) -> float:
        """The end of the call's media (host seconds): the silent party's last
        packet (both silent: the later one), narrowed by the polls (``last_heard``)."""
        silent, stamped = verdict
        last, dialog = session.last_stats, session.dialog
        if last is None or dialog is None:
            return stamped
        tags = {"caller": (session.caller_tag,), "callee": (dialog.callee_tag,)}.get(
            silent, (session.caller_tag, dialog.callee_tag))
        heard = [last_heard(last_packets(last, tag), session.heard.get(tag)) for tag in tags]
        return max(heard) if any(heard) else stamped

    def _timed_out(self, session: Session, silent: str, last_host: float, host_now: float,
                   stats: CallStats | None) -> None:
        dialog = session.dialog
        if dialog is None:
            return
        core = self.core
        quiet = int(host_now - last_host)
        text = f"media timeout: {silent} silent" if silent != "both" else "media timeout: both sides silent"
        core.emit(core.events.for_dialog(
            ev.MediaTimeout, dialog, silent=silent, leg=dialog.leg,
            last_media_ms=clock_ms(last_host, host_now, clock.now_ms()),
            reason=f"{text} for {quiet} s"))
        if stats is not None:
            self.end(session, stats)     # MediaStats from the counters just read, then delete
        elif session.phase is Phase.ACTIVE and session.apply("end") is Phase.ENDING:
            # rtpengine forgot the call: nothing to delete
            self._emit_stats(session, session.last_stats or CallStats())
            session.apply("deleted")
            self._forget(session)
        core.dialogs.end_by_proxy(dialog, reason_header(MEDIA_TIMEOUT_CAUSE, text), "media_timeout")


class Exchange:
    """One offer/answer through the relay (an initial INVITE, a re-INVITE or
    UPDATE): the responses of that request go upstream through here, in the
    order they came, each one with SDP once rtpengine has rewritten it."""
    __slots__ = ("relay", "session", "offerer_tag", "initial", "queue")

    def __init__(self, relay: MediaRelay, session: Session, offerer_tag: str, initial: bool):
        self.relay = relay
        self.session = session
        self.offerer_tag = offerer_tag
        self.initial = initial
        self.queue: deque[list[Any]] = deque()    # [response, ready, send]

    def response(self, resp: SipMessage, send: Callable[[SipMessage], None]) -> None:
        status = resp.status or 0
        item: list[Any] = [resp, True, send]
        if 100 < status < 300 and has_sdp(resp) and self.session.phase in (Phase.EARLY, Phase.ACTIVE):
            item[1] = False
            self.relay.answer(self.session, self.offerer_tag, resp,
                              lambda sdp: self._answered(item, sdp))
        self.queue.append(item)
        self._flush()

    def _answered(self, item: list[Any], sdp: bytes | None) -> None:
        if sdp is not None:
            item[0].body = sdp
        item[1] = True
        self._flush()

    def _flush(self) -> None:
        while self.queue and self.queue[0][1]:
            resp, _, send = self.queue.popleft()
            send(resp)
            if self.initial and (resp.status or 0) >= 300:
                self.relay.end(self.session)       # the call failed (or was cancelled)
