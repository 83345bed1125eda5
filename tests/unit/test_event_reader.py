"""``events.read``: the one way a processor reads a sip.events record — a call
event of this schema version, or ``Unreadable`` with the reason it counts."""
from __future__ import annotations

import msgspec
import pytest

from proxy.contract import events as ev

BYE = ev.CallBye(id="e-1", ts_ms=1_793_491_200_000, call_id="c-1", from_tag="ft", to_tag="tt",
                 proxy="node-a", by="caller")


def test_a_current_event_is_read_back():
    assert ev.read(ev.encode(BYE)) == BYE


@pytest.mark.parametrize("data", [b"", None, b"not json", b'{"type": "call.bye"}', b'{"type": "no.such"}'])
def test_what_is_not_a_call_event_is_undecodable(data):
    with pytest.raises(ev.Unreadable) as caught:
        ev.read(data)
    assert caught.value.reason == "undecodable"


def test_another_schema_version_is_refused_by_name():
    future = msgspec.structs.replace(BYE, v=ev.SCHEMA_VERSION + 1)
    with pytest.raises(ev.Unreadable) as caught:
        ev.read(ev.encode(future))
    assert caught.value.reason == "unknown_version" and "CallBye v2 (id e-1)" in str(caught.value)
