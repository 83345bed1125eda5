"""Bencode for the ng protocol: exact encodings, round trips, and refusal of malformed or oversized input."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.media.bencode import MAX_DEPTH, BencodeError, decode, encode


def test_known_encodings_match_rtpengines_examples() -> None:
    assert encode({"command": "ping"}) == b"d7:command4:pinge"
    assert decode(b"d6:result4:ponge") == {"result": "pong"}
    assert encode({"b": 1, "a": [-3, b"\x00", "é"]}) == b"d1:ali-3e1:\x002:\xc3\xa9e1:bi1ee"


def test_rtpengine_unsorted_keys_are_accepted() -> None:
    assert decode(b"d3:sdp1:x6:result2:oke") == {"sdp": "x", "result": "ok"}


def test_bytes_mode_keeps_raw_strings() -> None:
    assert decode(b"l3:\xff\x00ae", text=False) == [b"\xff\x00a"]


json_like = st.recursive(
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30)


@given(json_like)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_bencode_error(data: bytes) -> None:
    try:
        decode(data)
    except BencodeError:
        pass


@pytest.mark.parametrize("data", [
    b"", b"i", b"ie", b"i-e", b"i-0e", b"i03e", b"i1x2e", b"i" + b"9" * 30 + b"e",
    b"3:ab", b"03:abc", b"-1:a", b"x", b"l", b"li1e", b"d", b"d1:ae", b"di1ei2ee", b"d1:ai1e1:ai2ee",
    b"i1ei2e", b"4:spam ", b"d3:sdp", b"9999999999:a",
])
def test_malformed_input_is_refused(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(BencodeError, match="exceeds"):
        decode(b"4:spam", max_input=5)
    with pytest.raises(BencodeError, match="exceeds"):
        decode(b"l" + b"i1e" * 30000 + b"e")


def test_nesting_is_bounded_in_both_directions() -> None:
    assert decode(b"l" * MAX_DEPTH + b"e" * MAX_DEPTH) is not None
    with pytest.raises(BencodeError, match="nesting"):
        decode(b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1))
    with pytest.raises(BencodeError, match="nesting"):
        decode(b"l" * 5000)                 # would hit Python's recursion limit unbounded
    deep: list = []
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(BencodeError):
        encode(deep)


@pytest.mark.parametrize("value", [True, 1.5, None, {1: 2}, object()])
def test_values_without_a_bencode_form_are_refused(value: object) -> None:
    with pytest.raises(BencodeError):
        encode(value)  # type: ignore[arg-type]
