"""The billing service's records on Kafka (proxy/contract/ledger.py) against docs/events.md:
every field described, the examples decode and encode back byte for byte, money as strings."""
from __future__ import annotations

import re
from decimal import Decimal as D
from pathlib import Path

import msgspec
import pytest

from proxy.contract.ledger import (
    LedgerEvent,
    Notification,
    decode_event,
    decode_notification,
    encode_event,
    encode_notification,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
RECORDS = [(LedgerEvent, "Ledger event", decode_event, encode_event),
           (Notification, "Notification", decode_notification, encode_notification)]


def section(title: str) -> str:
    match = re.search(rf"^### {re.escape(title)} .*?\n(.*?)(?=^##)", DOC, re.S | re.M)
    assert match, f"docs/events.md has no section {title!r}"
    return match.group(1)


@pytest.mark.parametrize("struct,title,decode,encode", RECORDS, ids=lambda r: getattr(r, "__name__", r))
def test_documented_and_the_example_is_the_wire_form(struct, title, decode, encode):
    text = section(title)
    for field in msgspec.structs.fields(struct):
        assert f"`{field.name}`" in text, f"{struct.__name__}.{field.name} is not described"
    example = re.search(r"```json\n(.*?)\n```", text, re.S).group(1)
    record = decode(example.encode())
    assert msgspec.json.format(encode(record), indent=2).decode() == example


def test_money_is_a_decimal_string_on_the_wire():
    event = LedgerEvent(id="e", account="a@b", kind="adjustment", amount=D("-0.000003"), currency="EUR", ts_ms=1)
    data = encode_event(event)
    assert b'"amount":"-0.000003"' in data and decode_event(data) == event
    # the field order, names and defaults of version 1 (what the sink and other readers parse)
    assert data == (b'{"id":"e","account":"a@b","kind":"adjustment","amount":"-0.000003","currency":"EUR",'
                    b'"ts_ms":1,"seq":0,"v":1,"call_id":"","cdr_id":"","leg":-1,"key":"","step":0,'
                    b'"final":false,"paid_ms":0,"answer_ms":0,"number":"","plan":"","prefix":"",'
                    b'"rate_name":"","gateway":"","duration_ms":0,"billed_s":0,"note":""}')
