"""NAT keep-alives and TCP flow reuse with the real proxy (two workers) and loopback phones.

A phone "behind a NAT" is a loopback socket whose REGISTER names a private
Contact and Via (192.168.x): the proxy must reach it at the socket it sent
from.  docs/nat.md."""
from __future__ import annotations

import contextlib
import socket
import threading
import uuid
import zlib

import pytest
from typer.testing import CliRunner

from api.cli import app
from proxy.core.location import LocationStore
from proxy.infra import clock
from proxy.sip.message import parse
from tests.harness.corefake import response_to
from tests.harness.poll import eventually
from tests.harness.proxy import proxy_run, read_events
from tests.harness.sipp import free_udp_port
from tests.harness.udppeer import HOST, UdpPeer

pytestmark = pytest.mark.integration

INTERVAL = 0.5
FAILURES = 2
WORKERS = 2


def cli(data_dir, *args):
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])
    assert result.exit_code == 0, result.output


@contextlib.contextmanager
def running_proxy(tmp_path, broker):
    data = tmp_path / "data"
    cli(data, "domain", "add", "example.test")
    for user in ("carol", "dave"):
        cli(data, "user", "add", f"{user}@example.test", "--password", f"{user}-secret")
    config = tmp_path / "sipledger.toml"
    # T1 = 30 ms: an unanswered OPTIONS gives up after 64*T1 = 1.9 s instead of 32 s
    config.write_text(f"""[proxy]
workers = {WORKERS}
t1 = 0.03
[auth]
enabled = false
[authorization]
enabled = false
[nat]
keepalive_seconds = {INTERVAL}
keepalive_failures = {FAILURES}
""")
    port = free_udp_port()
    with proxy_run(data, config, port, broker.bootstrap):
        yield port, data


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, broker):
    """One proxy for the module's tests (each uses its own users)."""
    with running_proxy(tmp_path_factory.mktemp("nat"), broker) as running:
        yield running


def register(user: str, private: str, transport: str, local_port: int, call_id: str) -> bytes:
    return (f"REGISTER sip:example.test SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {private};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
            f"From: <sip:{user}@example.test>;tag=r{local_port}\r\nTo: <sip:{user}@example.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{private}{';transport=tcp' if transport == 'TCP' else ''}>\r\n"
            f"Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def ok_to(text: str, status: int = 200, reason: str = "OK") -> str:
    return response_to(parse(text.encode()), status, reason, to_tag="ph").replace("\n", "\r\n")


def bindings(data, aor):
    with LocationStore.in_data_dir(data) as store:
        return store.lookup(aor, clock.time())


def test_a_natted_binding_is_pinged_once_per_interval_and_dropped_when_silent(proxy, broker):
    port, data = proxy
    with UdpPeer() as phone:
        answering = threading.Event()
        answering.set()
        phone.answer = lambda text: ok_to(text) if text.startswith("OPTIONS ") and answering.is_set() else None
        call_id = f"reg-{uuid.uuid4().hex}"
        phone.sock.sendto(register("carol", "192.168.1.50:5060", "UDP", phone.port, call_id), (HOST, port))
        eventually(lambda: 200 in phone.statuses(call_id), "the REGISTER answered")
        (binding,) = bindings(data, "carol@example.test")
        assert binding.nat and binding.received == f"sip:127.0.0.1:{phone.port};transport=udp"

        def pings() -> set[str]:
            """Call-IDs of the keep-alives so far (a retransmission is the same ping)."""
            with phone._lock:
                return {m.split("Call-ID: ", 1)[1].split("\r\n", 1)[0] for m in phone.received
                        if m.startswith("OPTIONS sip:carol@192.168.1.50:5060 SIP/2.0")}
        eventually(lambda: len(pings()) >= 2, "keep-alives at the pinhole, Request-URI = the Contact", 10)
        first = pings()
        window = 4.0
        threading.Event().wait(window)
        # every reply reaches the pinging worker (it picks a Call-ID it owns: the reply
        # comes back to the shared port), so a ping goes out every interval; one worker
        # pings the binding (two would double this), a lost reply would stall it 64*T1
        sent = len(pings() - first)
        assert window / INTERVAL - 3 <= sent <= window / INTERVAL + 2, sent
        assert bindings(data, "carol@example.test")            # answered: alive

        answering.clear()                                       # the NAT mapping is gone
        eventually(lambda: not bindings(data, "carol@example.test"),
                   f"the binding dropped after {FAILURES} unanswered pings", 30)
        events = read_events(broker.bootstrap, call_id=call_id, types=["registration.dropped"],
                             min_count=1, timeout=20)
        assert [(e["aor"], e["contact"], e["reason"], e["failures"]) for e in events] == [
            ("carol@example.test", "sip:carol@192.168.1.50:5060", "keepalive_timeout", FAILURES)]


class TcpPhone:
    """A phone on one TCP connection: what arrives, split into messages (no bodies here)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.port = self.sock.getsockname()[1]
        self.buffer = b""
        self.messages: list[str] = []
        self.crlf_pings = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while True:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.buffer += data
                while True:
                    stripped = self.buffer.lstrip(b"\r\n")
                    if len(stripped) != len(self.buffer) and self.buffer.startswith(b"\r\n\r\n"):
                        self.crlf_pings += 1
                    self.buffer = stripped
                    head, sep, rest = self.buffer.partition(b"\r\n\r\n")
                    if not sep:
                        break
                    self.messages.append((head + sep).decode())
                    self.buffer = rest

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def requests(self, method: str) -> list[str]:
        with self.lock:
            return [m for m in self.messages if m.startswith(method + " ")]

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


def test_requests_to_a_tcp_phone_reuse_its_registration_connection_whatever_worker_has_the_call(proxy):
    port, data = proxy
    with UdpPeer() as caller:
        phone = TcpPhone(port)
        try:
            call_id = f"reg-{uuid.uuid4().hex}"
            phone.send(register("dave", "192.168.1.60:5070", "TCP", phone.port, call_id))
            eventually(lambda: any(m.startswith("SIP/2.0 200") for m in phone.messages), "REGISTER 200 on the connection")
            (binding,) = bindings(data, "dave@example.test")
            assert binding.nat and binding.worker in range(WORKERS)
            # one call owned by each worker: the connection belongs to only one of them
            call_ids = {}
            n = 0
            while len(call_ids) < WORKERS:
                cid = f"tcp-call-{n}"
                call_ids.setdefault(zlib.crc32(cid.encode()) % WORKERS, cid)
                n += 1
            for cid in call_ids.values():
                caller.request("INVITE", "sip:dave@example.test", "sip:dave@example.test", port, call_id=cid)
                invite = eventually(lambda cid=cid: [m for m in phone.requests("INVITE") if cid in m],
                                    f"INVITE {cid} over the registration connection")[0]
                assert invite.startswith("INVITE sip:dave@192.168.1.60:5070;transport=tcp SIP/2.0")
                phone.send(ok_to(invite, 486, "Busy Here").encode())
                eventually(lambda cid=cid: 486 in caller.statuses(cid), f"the phone's 486 back at the caller ({cid})")
            eventually(lambda: phone.crlf_pings >= 2, "CRLF keep-alives on the connection", 10)
        finally:
            phone.close()

