"""Bounded fuzzing (hypothesis) of the parser, the transaction layer and the
engine with mutated SIP (tests/harness/fuzz.py).  Nothing may escape as an
exception, nothing may be logged with a traceback, and every response goes
back to an address a message came from (never to a name a sender wrote).
About a minute in all; examples are derandomised so CI runs are repeatable."""
from __future__ import annotations

import ipaddress
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.ports import Target
from proxy.sip import build
from proxy.sip.message import ParseError, parse
from proxy.transactions import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
    TransactionStateError,
    client_key,
    server_key,
)
from tests.harness.corefake import ALICE, BOB, CoreRig, register
from tests.harness.fuzz import MUTATIONS, SEEDS

FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

messages = st.builds(
    lambda seed, steps: _apply(seed, steps),
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.sampled_from(MUTATIONS), st.randoms(use_true_random=False)),
             min_size=1, max_size=4))


def _apply(seed: bytes, steps) -> bytes:
    for mutation, rng in steps:
        seed = mutation(rng, seed)
    return seed


class _Tracebacks(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture
def tracebacks():
    handler = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@FUZZ
@given(data=messages)
def test_parser_raises_only_parse_errors(data):
    try:
        msg = parse(data)
    except ParseError as exc:
        assert exc.status in (400, 413, 513)
        return
    parse(msg.serialize())           # what we would relay parses again


@FUZZ
@given(data=messages, status=st.sampled_from([100, 180, 200, 407, 486, 503]))
def test_transaction_layer_takes_any_parsed_message(data, status):
    try:
        msg = parse(data)
    except ParseError:
        return
    if msg.is_request:
        try:
            server_key(msg)
        except ValueError:
            return                   # no usable Via: the engine answers 400
        cls = InviteServerTransaction if msg.method == "INVITE" else NonInviteServerTransaction
        tx = cls(msg, reliable=False)
        tx.on_request(msg)
        tx.send_response(build.make_response(msg, status), retransmit=status < 300)
        for timer in "GHIJL":
            tx.on_timer(timer)
        tx.on_request(msg)
        try:
            tx.send_response(build.make_response(msg, 500))
        except TransactionStateError:
            pass
    else:
        try:
            client_key(msg)
        except ValueError:
            return
        invite = parse(SEEDS[0])
        tx = InviteClientTransaction(invite, reliable=False)
        tx.start()
        tx.on_response(msg)
        tx.on_response(msg)
        for timer in "ABDM":
            tx.on_timer(timer)


@pytest.fixture(scope="module")
def rigs(tmp_path_factory):
    made = []
    for auth in (False, True):
        rig = CoreRig(tmp_path_factory.mktemp(f"fuzz-auth-{auth}"), auth=auth)
        rig.store.add_domain("example.test")
        rig.store.add_user("alice", "example.test", "a-secret")
        rig.store.add_user("bob", "example.test", "b-secret")
        rig.reload()
        # no DNS in a unit test: the rig records queries and never answers them
        register(rig)
        made.append(rig)
    return made


# one source is not the address its messages' Vias name: replies must still go there
SOURCES = [ALICE, BOB, Target("udp", "198.51.100.9", 40000), Target("tcp", "192.0.2.10", 40001, 7)]
SOURCE_HOSTS = {s.host for s in SOURCES}


@FUZZ
@given(batch=st.lists(st.tuples(messages, st.sampled_from(SOURCES), st.sampled_from([0, 0, 1, 40])),
                      min_size=1, max_size=5),
       which=st.integers(0, 1))
def test_engine_answers_any_input_without_traceback(rigs, tracebacks, batch, which):
    rig = rigs[which]
    for data, source, wait in batch:
        rig.engine.on_data(data, source)
        if wait:
            rig.effects.advance(wait)
        for msg, target in rig.effects.take():
            if msg.status is not None:
                assert target.host in SOURCE_HOSTS, (msg, target)   # the rig's state spans examples
            else:
                ipaddress.ip_address(target.host)       # requests go to addresses only
    assert tracebacks.records == [], tracebacks.records[0].getMessage()
