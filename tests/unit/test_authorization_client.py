"""The authorization client's socket: loopback services as before, a service in another
container or host (compose/) reached from a wildcard socket that takes its answers only."""
from __future__ import annotations

import pytest

from proxy.contract import credit
from proxy.infra.config import AuthorizationSettings
from proxy.runtime.authorization import AuthorizationClient, local_address


@pytest.mark.parametrize("host,bound", [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.5", "127.0.0.5"), ("::1", "::1"), ("localhost", "localhost"),
    ("172.28.0.20", "0.0.0.0"), ("192.0.2.7", "0.0.0.0"), ("2001:db8::7", "::"),
])
def test_the_socket_binds_loopback_services_only_to_their_address(host, bound):
    assert local_address(host) == bound


def _request() -> credit.AuthorizeRequest:
    return credit.AuthorizeRequest(id="r1", ts_ms=1, call_id="c", account="a@x", destination="1",
                                   request_uri="sip:1@x", caller_uri="sip:a@x")


def _answer() -> bytes:
    return credit.encode(credit.AuthorizeResponse(id="r1", allowed=True))


async def test_a_remote_service_is_the_only_one_answering(tmp_path):
    client = AuthorizationClient(AuthorizationSettings(host="192.0.2.7", port=9099, timeout_ms=5000), tmp_path)
    answers = []
    client.authorize(_request(), answers.append)          # not started: nothing is sent, the timer runs
    try:
        client.datagram_received(_answer(), ("198.51.100.1", 9099))      # someone else
        client.datagram_received(_answer(), ("192.0.2.7", 9100))         # another port of the host
        assert answers == [] and "r1" in client.pending
        client.datagram_received(_answer(), ("192.0.2.7", 9099))
        assert [a.allowed for a in answers] == [True]
    finally:
        client.close()


async def test_a_loopback_service_answers_as_before(tmp_path):
    client = AuthorizationClient(AuthorizationSettings(host="127.0.0.1", port=9099, timeout_ms=5000), tmp_path)
    answers = []
    client.authorize(_request(), answers.append)
    try:
        client.datagram_received(_answer(), ("127.0.0.1", 40000))        # bound to loopback: only local senders
        assert [a.allowed for a in answers] == [True]
    finally:
        client.close()
