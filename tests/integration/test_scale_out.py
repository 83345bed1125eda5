"""Two proxy instances on one PostgreSQL location store and one PostgreSQL
provisioning database (docs/scale-out.md), real processes and SIPp phones: A on
127.0.0.2, B on 127.0.0.3, the phones on 127.0.0.1.

bob registers through A and alice reaches him through B; a nonce A issued is
re-challenged by B as stale (the shared secret), never refused; a domain, a user,
a trusted source, a gateway and a route added on PostgreSQL reach both instances;
and a kill -9 of A mid-call leaves B's call alone."""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from urllib.parse import quote

import msgspec
import pytest
from fastapi.testclient import TestClient

from api.calls import LiveCalls
from api.main import create_app
from api.state import AppState
from api.tokens import open_store as open_token_store
from proxy.contract import callfold
from proxy.contract import events as ev
from proxy.core.digest import compute_ha1, compute_response, parse_digest
from proxy.infra.config import load
from proxy.provisioning import service as provisioning
from proxy.provisioning.store import ProvisioningStore
from proxy.routing import service as routing
from proxy.routing.store import RoutingStore
from proxy.runtime.livecalls import read_live_calls
from tests.harness.calls import DOMAIN, PASSWORDS, assert_completed, assert_uas_completed
from tests.harness.cluster import A, B, ProxyPair
from tests.harness.poll import eventually
from tests.harness.postgres import PostgresServer, postgres_available
from tests.harness.proxy import read_events, wait_for_types
from tests.harness.sipp import SippUAS, register, run_uac

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL 15 (Debian postgresql) not installed")


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def provisioning_url(pg) -> str:
    return pg.create_database("provisioning")


@pytest.fixture(scope="module")
def running_pair(tmp_path_factory, broker, pg, provisioning_url):
    """(the ProxyPair, its [(A's address, A's process), (B's ...)]): two `python -m proxy run`
    on one location store and one provisioning database."""
    tmp = tmp_path_factory.mktemp("scale-out")
    url = pg.create_database("location")
    # SCALE_OUT_WORKERS=2: the same tests with two workers per instance (hand-offs)
    pair = ProxyPair(tmp, url, broker.bootstrap, workers=int(os.environ.get("SCALE_OUT_WORKERS", "1")),
                     provisioning_url=provisioning_url)
    with pair as addrs:
        yield pair, addrs


@pytest.fixture(scope="module")
def cluster(running_pair):
    return running_pair[1]


def test_registered_on_a_reached_through_b(cluster, tmp_path):
    (a, _), (b, _) = cluster
    with SippUAS("uas_answer", timeout=20, workdir=tmp_path) as bob:
        res = register(a, "bob", DOMAIN, PASSWORDS["bob"], bob.contact_host, 300, workdir=tmp_path)
        assert res.ok, res.describe()
        call = run_uac("uac_call", b, {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 15,
                       auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}", workdir=tmp_path,
                       hold_ms=100)
        assert_completed(call, "alice's call through B to bob registered on A")
        done = assert_uas_completed(bob, "bob answers")
        assert register(a, "bob", DOMAIN, PASSWORDS["bob"], bob.contact_host, 0, workdir=tmp_path).ok
    (invite,) = done.received("INVITE")
    (rr,) = invite.headers_all("record-route")          # B only (its worker's own port with workers > 1)
    assert rr.startswith(f"<sip:{b[0]}:") and rr.endswith(";lr>"), rr


def test_instances_starting_together_create_the_provisioning_schema_once(pg):
    """Proxies, the API and the CLI each create missing tables when they open the store;
    on PostgreSQL, started together, they raced (a duplicate CREATE TABLE, a duplicate
    change-log row) until schema creation took an advisory lock."""
    url = pg.create_database("race")
    stores = [cls(url) for cls in (ProvisioningStore, RoutingStore) * 3]
    start, errors = threading.Barrier(len(stores)), []

    def create(store) -> None:
        start.wait()
        try:
            store.create_schema()
        except Exception as exc:           # noqa: BLE001 - collected, asserted below
            errors.append(repr(exc))
    threads = [threading.Thread(target=create, args=(store,)) for store in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert [store.version() for store in stores[:2]] == [0, 0]
    for store in stores:
        store.close()


def test_provisioning_on_postgres_reaches_both_instances(cluster, provisioning_url, tmp_path):
    """What the API and the CLI write (their service layer) into the shared provisioning
    database, both running instances serve within a reload: a new domain and user
    (registering through A and through B), a trusted source, a gateway and a route
    (a call from that source through each instance reaches the gateway)."""
    (a, _), (b, _) = cluster
    with ProvisioningStore(provisioning_url) as store:
        provisioning.add_domain(store, "pg.example.net")
        provisioning.add_user(store, "erin@pg.example.net", "pg-secret")
    for proxy in (a, b):
        eventually(lambda proxy=proxy: register(proxy, "erin", "pg.example.net", "pg-secret", "127.0.0.1:5999",
                                                 300, workdir=tmp_path).ok,
                   f"erin registered through {proxy}", timeout=10, interval=0.3)
        assert register(proxy, "erin", "pg.example.net", "pg-secret", "127.0.0.1:5999", 0, workdir=tmp_path).ok
    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for sock in (gateway, caller):
            sock.bind((TRUSTED_CALLER, 0))
            sock.settimeout(0.5)
        with RoutingStore(provisioning_url) as store:
            routing.add_trusted(store, f"{TRUSTED_CALLER}/32", tag="pg test")
            routing.add_gateway(store, "pg-gw", f"{TRUSTED_CALLER}:{gateway.getsockname()[1]}")
            routing.add_route(store, "555", "pg-gw")
        for n, proxy in enumerate((a, b)):
            invite, source = eventually(lambda n=n, proxy=proxy: _gateway_invite(caller, gateway, proxy, n),
                                        f"the trusted call through {proxy} at the gateway", timeout=10, interval=0)
            assert invite.startswith(f"INVITE sip:5550100@{TRUSTED_CALLER}:") and source[0] == proxy[0], invite
    finally:
        gateway.close()
        caller.close()


TRUSTED_CALLER = "127.0.0.9"         # not the phones' 127.0.0.1: the other tests' phones stay untrusted


def _gateway_invite(caller: socket.socket, gateway: socket.socket, proxy, n: int) -> tuple[str, tuple] | None:
    """A call from the trusted source to 5550100 through ``proxy``; the INVITE the gateway
    got (answered 486, so the call ends), or None when the proxy refused it (not reloaded)."""
    port = caller.getsockname()[1]
    caller.sendto(f"""INVITE sip:5550100@{DOMAIN} SIP/2.0\r
Via: SIP/2.0/UDP {TRUSTED_CALLER}:{port};branch=z9hG4bKpg{n}{time.monotonic_ns()};rport\r
From: <sip:carrier@{TRUSTED_CALLER}>;tag=pg{n}\r
To: <sip:5550100@{DOMAIN}>\r
Call-ID: pg-{n}-{time.monotonic_ns()}@{TRUSTED_CALLER}\r
CSeq: 1 INVITE\r
Contact: <sip:carrier@{TRUSTED_CALLER}:{port}>\r
Max-Forwards: 70\r
Content-Length: 0\r
\r
""".encode(), proxy)
    text = ""
    while not text.startswith("INVITE "):          # (the ACK of an earlier 486 may come first)
        try:
            data, source = gateway.recvfrom(65535)
        except TimeoutError:
            return None                  # refused (the caller got 403/404): not reloaded yet
        text = data.decode("latin-1")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    busy = "\r\n".join(["SIP/2.0 486 Busy Here",
                         *(h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")),
                         next(h for h in head if h.lower().startswith("to:")) + ";tag=gw",
                         "Content-Length: 0", "", ""])
    gateway.sendto(busy.encode(), source)
    return text, source


@contextlib.contextmanager
def api_of(pair: ProxyPair, index: int, bootstrap: str):
    """The REST API (the app `python -m api.serve` serves) on instance ``index``'s data
    dir and config, with an admin token: (client, headers)."""
    config = load(pair.configs[index])
    config = msgspec.structs.replace(config, kafka=msgspec.structs.replace(config.kafka, bootstrap_servers=bootstrap))
    data = pair.tmp / ("a", "b")[index]
    tokens = open_token_store(data)
    state = AppState(cdr_store=None, token_store=tokens, live_calls=LiveCalls(data, config))  # type: ignore[arg-type]
    try:
        with TestClient(create_app(state)) as client:
            yield client, {"Authorization": f"Bearer {tokens.create('admin')[1]}"}
    finally:
        tokens.close()


def test_a_call_through_b_is_listed_and_hung_up_by_the_api_of_a(running_pair, broker, tmp_path):
    """Live calls across instances (docs/scale-out.md): each worker publishes its calls
    into the shared provisioning database; A's API lists a call B holds (A's own files
    do not have it) and hangs it up through call.control, which B's worker acts on."""
    pair, ((a, _), (b, _)) = running_pair
    with SippUAS("uas_bye_from_proxy", timeout=30, workdir=tmp_path) as bob, \
            api_of(pair, 0, broker.bootstrap) as (client, admin):
        assert register(b, "bob", DOMAIN, PASSWORDS["bob"], bob.contact_host, 300, workdir=tmp_path).ok
        box: dict = {}
        caller = threading.Thread(target=lambda: box.update(res=run_uac(
            "uac_wait_bye", b, {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 30,
            auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}", workdir=tmp_path)))
        caller.start()
        try:
            (invite,) = bob.wait_for("INVITE", 10)
            bob.wait_for("ACK", 10)
            call_id = invite.header("Call-ID")

            def listed() -> dict | None:
                page = client.get("/v1/calls", headers=admin)
                assert page.status_code == 200, page.text
                return next((c for c in page.json()["items"] if c["call_id"] == call_id), None)
            live = eventually(lambda: (c := listed()) is not None and c["state"] == "confirmed" and c,
                              "B's call in A's /v1/calls", timeout=10, interval=0.2)
            assert live["instance"] == f"{B}:{b[1]}" and live["account"] == f"alice@{DOMAIN}", live
            local = [c["call_id"] for s in read_live_calls(pair.tmp / "a" / "run") for c in s["calls"]]
            assert call_id not in local                  # A's own workers do not hold it
            hung = client.delete(f"/v1/calls/{quote(call_id, safe='')}", headers=admin,
                                 params={"reason": "hung up through A"})
            assert hung.status_code == 202, hung.text
        finally:
            caller.join(30)
        assert_completed(box["res"], "alice is hung up through A's API")
        bob_res = assert_uas_completed(bob, "bob is hung up through A's API")
        assert 'text="hung up through A"' in (bob_res.received("BYE")[0].header("Reason") or "")
        eventually(lambda: listed() is None, "the call gone from A's /v1/calls", timeout=10, interval=0.2)
        assert register(b, "bob", DOMAIN, PASSWORDS["bob"], bob.contact_host, 0, workdir=tmp_path).ok


class RawPhone:
    """A phone of a few lines, over UDP or over one TCP connection to ``server``:
    REGISTERs with the digest credentials it is told to use, reads what comes."""

    def __init__(self, server: tuple[str, int] | None = None):
        self.tcp = server is not None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if self.tcp else socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.buffer = b""
        if server is not None:
            self.sock.connect(server)

    def send(self, text: str, addr) -> None:
        if self.tcp:
            self.sock.sendall(text.encode())
        else:
            self.sock.sendto(text.encode(), addr)

    def register(self, addr, user: str, contact: str, cseq: int, creds: str = "") -> str:
        self.send(f"""REGISTER sip:{DOMAIN} SIP/2.0\r
Via: SIP/2.0/{"TCP" if self.tcp else "UDP"} 127.0.0.1:{self.port};branch=z9hG4bKn{cseq};rport\r
From: <sip:{user}@{DOMAIN}>;tag=n1\r
To: <sip:{user}@{DOMAIN}>\r
Call-ID: reg-{user}-{self.port}\r
CSeq: {cseq} REGISTER\r
Contact: <{contact}>\r
{creds}Max-Forwards: 70\r
Content-Length: 0\r
\r
""", addr)
        return self.final()

    def final(self) -> str:
        while True:
            text, _ = self.receive()
            if text.startswith("SIP/2.0 ") and not text.startswith("SIP/2.0 1"):
                return text                   # (requests, e.g. the ACK of our 486, are skipped)

    def receive(self) -> tuple[str, tuple[str, int]]:
        if not self.tcp:
            data, source = self.sock.recvfrom(65535)
            return data.decode("latin-1"), source
        while True:                                   # one message off the stream
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                length = next((int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length:")), 0)
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return (head + sep + rest[:length]).decode("latin-1"), self.sock.getpeername()
            chunk = self.sock.recv(65535)
            assert chunk, "the proxy closed the connection"
            self.buffer += chunk

    @staticmethod
    def credentials(challenge_text: str, user: str) -> str:
        challenge = parse_digest(next(h.split(":", 1)[1] for h in challenge_text.split("\r\n")
                                      if h.lower().startswith("www-authenticate:")))
        ha1 = compute_ha1("MD5", user, DOMAIN, PASSWORDS[user])
        response = compute_response("MD5", ha1, challenge["nonce"], "REGISTER", f"sip:{DOMAIN}", "auth",
                                    "00000001", "c0ffee")
        return (f'Authorization: Digest username="{user}", realm="{DOMAIN}", nonce="{challenge["nonce"]}", '
                f'uri="sip:{DOMAIN}", response="{response}", algorithm=MD5, qop=auth, nc=00000001, '
                'cnonce="c0ffee"\r\n')

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def phone():
    p = RawPhone()
    yield p
    p.close()


def test_a_nonce_of_a_is_stale_at_b_never_a_refusal(cluster, phone):
    (a, _), (b, _) = cluster
    contact = f"sip:carol@127.0.0.1:{phone.port}"
    challenge = phone.register(a, "carol", contact, 1)
    assert challenge.startswith("SIP/2.0 401")
    answer = phone.register(b, "carol", contact, 2, RawPhone.credentials(challenge, "carol"))   # A's nonce, to B
    assert answer.startswith("SIP/2.0 401") and "stale=true" in answer, answer


def test_a_natted_phone_registered_on_a_is_reached_from_b_through_a(cluster, phone, tmp_path):
    """bob's Contact is a private address his packets do not come from (a NAT): B
    cannot reach it, so the INVITE goes B -> A -> the address A saw bob at."""
    (a, _), (b, _) = cluster
    call_through_a(phone, a, b, "sip:bob@192.168.77.20:5062", tmp_path)


def test_a_tcp_phone_registered_on_a_is_reached_from_b_over_its_connection(cluster, tmp_path):
    """bob registered over TCP on A: only A holds his connection, so B's INVITE
    reaches him through A, on that connection (RFC 5626 flow reuse)."""
    (a, _), (b, _) = cluster
    tcp_phone = RawPhone(server=a)
    try:
        call_through_a(tcp_phone, a, b, f"sip:bob@127.0.0.1:{tcp_phone.port};transport=tcp", tmp_path)
    finally:
        tcp_phone.close()


def call_through_a(phone: RawPhone, a, b, contact: str, tmp_path) -> None:
    """bob registers ``contact`` on A from ``phone``; alice calls him through B; the
    INVITE must reach the phone from A with both instances' Record-Routes, A's
    carrying the flow; bob answers 486, and alice must get it."""
    challenge = phone.register(a, "bob", contact, 1)
    assert phone.register(a, "bob", contact, 2, RawPhone.credentials(challenge, "bob")).startswith("SIP/2.0 200")
    results = {}
    caller = threading.Thread(target=lambda: results.update(res=run_uac(
        "uac_call_expect_failure", b, {"caller": "alice", "callee": "bob", "domain": DOMAIN}, 15,
        auth=("alice", PASSWORDS["alice"]), auth_uri=f"bob@{DOMAIN}", workdir=tmp_path,
        variables={"expected": 486})))
    caller.start()
    try:
        text, source = phone.receive()
        while not text.startswith("INVITE"):
            text, source = phone.receive()
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        assert head[0] == f"INVITE {contact} SIP/2.0" and source[0] == A
        rr = [h.split(":", 1)[1].strip() for h in head if h.lower().startswith("record-route:")]
        assert rr[0].startswith(f"<sip:{A}:") and ";sl-flow=" in rr[0] and rr[-1].startswith(f"<sip:{B}:"), rr
        vias = [h.split(":", 1)[1].strip() for h in head if h.lower().startswith("via:")]
        busy = "\r\n".join(["SIP/2.0 486 Busy Here", *(f"Via: {v}" for v in vias),
                             *(h for h in head[1:] if h.split(":", 1)[0].lower() in ("from", "call-id", "cseq")),
                             next(h for h in head if h.lower().startswith("to:")) + ";tag=busy1",
                             "Content-Length: 0", "", ""])
        phone.send(busy, source)
    finally:
        caller.join(20)
    res = results["res"]
    assert res.returncode == 0 and res.successful == 1, res.describe()
    challenge = phone.register(a, "bob", contact, 3, "Expires: 0\r\n")       # the next test starts clean
    gone = phone.register(a, "bob", contact, 4, RawPhone.credentials(challenge, "bob") + "Expires: 0\r\n")
    assert gone.startswith("SIP/2.0 200") and "\r\nContact:" not in gone, gone


def test_killing_a_mid_call_leaves_the_calls_of_b_alone(cluster, tmp_path, broker):
    (a, proc_a), (b, _) = cluster
    with SippUAS("uas_answer", timeout=30, workdir=tmp_path, calls=2) as dave:
        for proxy in (a, b):          # dave's binding is public UDP: either instance reaches him
            res = register(proxy, "dave", DOMAIN, PASSWORDS["dave"], dave.contact_host, 300, workdir=tmp_path)
            assert res.ok, res.describe()
        results = {}

        def call(name, proxy, caller, timeout):
            results[name] = run_uac("uac_call", proxy, {"caller": caller, "callee": "dave", "domain": DOMAIN},
                                    timeout, auth=(caller, PASSWORDS[caller]), auth_uri=f"dave@{DOMAIN}",
                                    workdir=tmp_path, hold_ms=4000, name=f"kill_{name}")

        threads = [threading.Thread(target=call, args=("via_a", a, "alice", 7)),
                   threading.Thread(target=call, args=("via_b", b, "carol", 20))]
        for t in threads:
            t.start()
        eventually(lambda: len(dave.messages()) and sum(1 for m in dave.messages() if m.method == "ACK") >= 2,
                   "both calls answered", timeout=15)
        proc_a.kill()                                  # kill -9 A (its workers die with it)
        proc_a.wait(10)
        for t in threads:
            t.join(30)
    assert_completed(results["via_b"], "carol's call through B, while A died")
    assert results["via_a"].successful == 0           # alice's BYE had nowhere to go

    # B's call: complete, hung up by carol.  A's: answered, never ended, so the CDR
    # processor closes it by the silence rule (docs/scale-out.md), here with a 2 s window
    rows = {}
    for name, until in (("via_b", wait_for_types("call.answered", "call.bye")),
                        ("via_a", wait_for_types("call.answered"))):
        call_id = results[name].sent("INVITE")[-1].header("Call-ID")
        events = read_events(broker.bootstrap, call_id=call_id, timeout=10, until=until, settle=0.3)
        state = callfold.fold(ev.decode(msgspec.json.encode(e)) for e in events)
        rows[name] = state, callfold.finish(state, 0)
    state, finished = rows["via_b"]
    (row,) = [r for r in finished if r.disposition == "answered"]
    assert row.hangup_by == "caller" and row.duration_ms > 0
    state, finished = rows["via_a"]
    assert finished is None                           # not over: no BYE ever came
    window = 2000
    closed = callfold.finish(state, callfold.silence_end_ms(state, window), silence=True)
    (row,) = [r for r in closed if r.disposition == "answered"]
    assert row.hangup_by == "silence" and row.end_ms == state.last_ms + window
