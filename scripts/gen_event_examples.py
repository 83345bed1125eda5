"""Print one JSON example of every event and command in the contract.

The examples in docs/events.md are this script's output, pasted verbatim;
tests/unit/test_contract_docs.py fails when they drift apart.

    .venv/bin/python scripts/gen_event_examples.py
"""
from __future__ import annotations

import sys
import typing
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.contract import commands, events  # noqa: E402

CALL_ID = "a84b4c76e66710@pc33.example.com"
START_MS = 1767225600000
CALLEE = events.Callee(request_uri="sip:+4930123456@example.com", to_uri="sip:+4930123456@example.com")


def _id(n: int) -> str:
    return f"{n:032x}"


def _envelope(after_ms: int, to_tag: str | None = "a6c85cf") -> dict:
    """The common fields of an event ``after_ms`` into the example call."""
    return dict(ts_ms=START_MS + after_ms, call_id=CALL_ID, from_tag="1928301774",
                to_tag=to_tag, proxy="sipledger-1", worker=0)


def example_events() -> list[events.CallEvent]:
    """One call's life, and the events of the other outcomes it could have had."""
    return [
        events.InviteReceived(
            id=_id(1), **_envelope(0, to_tag=None), branch="z9hG4bK776asdhds", cseq=314159,
            caller=events.Caller(from_uri="sip:alice@example.com", account="alice@example.com",
                                 display_name="Alice"),
            callee=CALLEE, source=events.Source(ip="192.0.2.10", port=5060, transport="udp"),
            user_agent="Softphone/1.0", max_duration_s=3600),
        events.InviteRouted(
            id=_id(2), **_envelope(1, to_tag=None),
            leg=events.Leg(index=0, branch="z9hG4bK.sl.0.ab12", destination="198.51.100.7:5060/udp"),
            callee=msgspec.structs.replace(CALLEE, target="sip:+4930123456@198.51.100.7:5060")),
        events.CallProgress(id=_id(3), **_envelope(180), leg=0, code=180, reason="Ringing"),
        events.LegFailed(id=_id(4), **_envelope(2400, to_tag="77f0e1"), leg=1, code=486, reason="Busy Here"),
        events.CallAnswered(id=_id(5), **_envelope(3000), leg=0, code=200, reason="OK",
                            callee_user_agent="Gateway/2.3", max_duration_s=3600),
        events.CallFailed(id=_id(6), **_envelope(5, to_tag="sl-404"), code=404, reason="Not Found",
                          by_proxy=True),
        events.CallAck(id=_id(7), **_envelope(3010), leg=0),
        events.CallCancel(id=_id(8), **_envelope(2000, to_tag=None), reason=None),
        events.CallBye(id=_id(9), **_envelope(63000), by="caller", reason=None, leg=0),
        events.DialogTimeout(id=_id(10), **_envelope(3603000), max_duration_s=3600,
                             answered_ms=START_MS + 3000),
        events.DialogTeardown(id=_id(11), **_envelope(60050), command_id=_id(101),
                              reason="credit exhausted", result="sent"),
        events.MaxDurationSet(id=_id(12), **_envelope(30020), command_id=_id(102),
                              max_duration_s=120, result="applied"),
        # issue 14: media relay, media timeouts, session timers, NAT keep-alives
        events.MediaStats(
            id=_id(13), **_envelope(63001), leg=0, relay="udp:127.0.0.1:2223",
            caller=events.MediaFlow(packets=3000, bytes=516000, errors=0, lost=2, jitter_ms=3, mos_x10=43,
                                    last_packet_ms=START_MS + 62990),
            callee=events.MediaFlow(packets=2995, bytes=515140, last_packet_ms=START_MS + 62995)),
        events.MediaTimeout(id=_id(14), **_envelope(93000), silent="callee", last_media_ms=START_MS + 63000,
                            leg=0, reason="media timeout: callee silent for 30 s"),
        events.SessionExpired(id=_id(15), **_envelope(1803000), session_expires_s=1800,
                              last_refresh_ms=START_MS + 3000, leg=0),
        events.BindingDropped(
            id=_id(16), ts_ms=START_MS + 120000, call_id="843817637684230@998sdasdh09", from_tag="",
            to_tag=None, proxy="sipledger-1", worker=0, aor="sip:bob@example.com",
            contact="sip:bob@192.168.1.20:5060", received="203.0.113.9:41234/udp",
            reason="keepalive_timeout", failures=3),
        # issue 16: fraud detection
        events.FraudAlert(
            id=_id(17), **_envelope(0), severity="critical", parameter="cpm", value=31, threshold=30,
            user="alice@example.com", account="alice", number="+4930123456", prefix="49",
            profile="default", rule_id=3, action="refused"),
    ]


def example_commands() -> list[commands.ControlCommand]:
    return [
        commands.Teardown(id=_id(101), ts_ms=START_MS + 60000, call_id=CALL_ID, issued_by="billing",
                          reason="credit exhausted", sip_cause=402),
        commands.SetMaxDuration(id=_id(102), ts_ms=START_MS + 30000, call_id=CALL_ID,
                                issued_by="billing", seconds=120),
    ]


def tag(struct: msgspec.Struct | type) -> str:
    return msgspec.inspect.type_info(struct if isinstance(struct, type) else type(struct)).tag


def contract_types() -> list[type]:
    """Every event and command type the contract defines."""
    return [*typing.get_args(events.CallEvent), *typing.get_args(commands.ControlCommand)]


def example_json(record: msgspec.Struct) -> str:
    return msgspec.json.format(msgspec.json.encode(record), indent=2).decode()


def update_doc(path: str) -> int:
    """Rewrite the JSON example under each `### `type`` heading of the doc."""
    import re
    doc = open(path).read()
    replaced = 0
    for record in [*example_events(), *example_commands()]:
        pattern = re.compile(r"(### `" + re.escape(tag(record)) + r"`.*?)```json\n.*?\n```", re.S)
        block = f"```json\n{example_json(record)}\n```"
        doc, n = pattern.subn(lambda m: m.group(1) + block, doc, count=1)
        replaced += n
    open(path, "w").write(doc)
    return replaced


def main() -> None:
    """Print every example; with --update FILE, rewrite the examples in FILE instead."""
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--update":
        print(f"updated {update_doc(sys.argv[2])} examples in {sys.argv[2]}")
        return
    for record in [*example_events(), *example_commands()]:
        print(f"### `{tag(record)}`\n\n```json\n{example_json(record)}\n```\n")


if __name__ == "__main__":
    main()
