"""Calls through the proxy with media relayed by a real rtpengine (userspace, tests/harness/rtpengine.py).

Two bare UDP phones on loopback: the caller INVITEs the callee through the
proxy with SDP, both SDPs come out naming rtpengine's address and ports, RTP
sent to them arrives at the other phone, and the BYE yields ``media.stats``
with the packets of each direction.  Then the callee goes quiet while the
caller keeps talking: the proxy ends the call (BYE both ways, ``Reason: ...
media timeout: callee silent``) and ``media.timeout`` says when the callee's
media stopped.
"""
from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from proxy.infra import clock
from tests.harness.poll import eventually
from tests.harness.proxy import proxy_run, read_events
from tests.harness.rtpengine import RtpEngine, rtpengine_available
from tests.harness.sipp import HOST, free_udp_port
from tests.harness.udppeer import UdpPeer

pytestmark = pytest.mark.skipif(not rtpengine_available(), reason="rtpengine (Debian rtpengine-daemon) not installed")

ONE_WAY_S = 3
RTP_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def rtpe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtpEngine]:
    engine = RtpEngine(tmp_path_factory.mktemp("rtpe")).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, broker, rtpe: RtpEngine) -> Iterator[int]:
    """`python -m proxy run` relaying every call's media (policy "always": loopback is not NATed)."""
    tmp = tmp_path_factory.mktemp("media-proxy")
    sip_port = free_udp_port()
    config = tmp / "sipledger.toml"
    config.write_text(f"""[proxy]
trusted_sources = ["127.0.0.0/8"]
[authorization]
enabled = false
[media]
enabled = true
launch = false
policy = "always"
poll_seconds = 0.5
one_way_timeout_seconds = {ONE_WAY_S}
rtp_timeout_seconds = {RTP_TIMEOUT_S}
timeout_seconds = 0.5
[[media.rtpengines]]
url = "{rtpe.url}"
""")
    with proxy_run(tmp / "data", config, sip_port, broker.bootstrap):
        yield sip_port


class Phone:
    """A UdpPeer for SIP plus an RTP socket announced in its SDP."""

    def __init__(self, name: str):
        self.name = name
        self.sip = UdpPeer()
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((HOST, 0))
        self.rtp.settimeout(0.05)
        self.rtp_port = self.rtp.getsockname()[1]
        self.tag = uuid.uuid4().hex[:8]
        self.ssrc = int(uuid.uuid4().hex[:8], 16)
        self.received_rtp = 0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_rtp, daemon=True)
        self._reader.start()

    @property
    def uri(self) -> str:
        return f"sip:{self.name}@{HOST}:{self.sip.port}"

    def sdp(self) -> str:
        return (f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
                f"m=audio {self.rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")

    def send_sip(self, text: str, port: int) -> None:
        self.sip.sock.sendto(text.encode(), (HOST, port))

    def send_rtp(self, to: tuple[str, int], count: int, start: int = 0) -> None:
        for seq in range(start, start + count):
            self.rtp.sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, self.ssrc) + b"\xff" * 160, to)
            time.sleep(0.02)

    def _read_rtp(self) -> None:
        while not self._stop.is_set():
            try:
                self.rtp.recvfrom(2048)
                self.received_rtp += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=2)
        self.rtp.close()
        self.sip.close()


@pytest.fixture
def phones() -> Iterator[tuple[Phone, Phone]]:
    alice, bob = Phone("alice"), Phone("bob")
    try:
        yield alice, bob
    finally:
        alice.close()
        bob.close()


def media_address(text: str) -> tuple[str, int]:
    body = text.split("\r\n\r\n", 1)[1]
    host = re.search(r"^c=IN IP4 (\S+)", body, re.M)
    port = re.search(r"^m=audio (\d+) ", body, re.M)
    assert host and port, text
    return host.group(1), int(port.group(1))


def header(text: str, name: str) -> list[str]:
    return re.findall(rf"^{name}:\s*(.*?)\r$", text, re.M | re.I)


def call(alice: Phone, bob: Phone, sip_port: int) -> tuple[str, str, str]:
    """alice INVITEs bob through the proxy with SDP; bob answers 200 with SDP; alice ACKs.
    Returns (Call-ID, the INVITE bob got, the 200 alice got)."""
    call_id = uuid.uuid4().hex
    sdp = alice.sdp()
    alice.send_sip(
        f"INVITE {bob.uri} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{alice.sip.port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
        f"From: <{alice.uri}>;tag={alice.tag}\r\nTo: <{bob.uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <{alice.uri}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}", sip_port)
    invite = eventually(lambda: next((m for m in bob.sip.messages(call_id) if m.startswith("INVITE")), None),
                        "the INVITE at bob")
    sdp = bob.sdp()
    vias = "".join(f"Via: {v}\r\n" for v in header(invite, "Via"))
    rrs = "".join(f"Record-Route: {v}\r\n" for v in header(invite, "Record-Route"))
    bob.send_sip(
        f"SIP/2.0 200 OK\r\n{vias}{rrs}From: {header(invite, 'From')[0]}\r\nTo: {header(invite, 'To')[0]};tag={bob.tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <{bob.uri}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}", sip_port)
    ok = eventually(lambda: next((m for m in alice.sip.messages(call_id) if m.startswith("SIP/2.0 200")), None),
                    "the 200 at alice")
    routes = "".join(f"Route: {v}\r\n" for v in reversed(header(ok, "Record-Route")))
    alice.send_sip(
        f"ACK {bob.uri} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{alice.sip.port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
        f"{routes}From: <{alice.uri}>;tag={alice.tag}\r\nTo: <{bob.uri}>;tag={bob.tag}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", sip_port)
    return call_id, invite, ok


def relayed_ports(rtpe: RtpEngine, invite: str, ok: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """Where each phone must send: both SDPs name rtpengine, not the other phone."""
    to_alice, to_bob = media_address(invite), media_address(ok)   # bob sends to_alice, alice sends to_bob
    for host, port in (to_alice, to_bob):
        assert host == HOST and rtpe.port_min <= port <= rtpe.port_max, (host, port, rtpe.port_min)
    return to_alice, to_bob


def test_rtp_both_ways_through_rtpengine_and_media_stats_at_bye(proxy, rtpe, broker, phones):
    alice, bob = phones
    call_id, invite, ok = call(alice, bob, proxy)
    to_alice, to_bob = relayed_ports(rtpe, invite, ok)
    sender = threading.Thread(target=bob.send_rtp, args=(to_alice, 30))
    sender.start()
    alice.send_rtp(to_bob, 40)
    sender.join()
    eventually(lambda: alice.received_rtp >= 25 and bob.received_rtp >= 35,
               "RTP relayed both ways", timeout=5)
    routes = "".join(f"Route: {v}\r\n" for v in reversed(header(ok, "Record-Route")))
    alice.send_sip(
        f"BYE {bob.uri} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{alice.sip.port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
        f"{routes}From: <{alice.uri}>;tag={alice.tag}\r\nTo: <{bob.uri}>;tag={bob.tag}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", proxy)
    eventually(lambda: any(m.startswith("BYE") for m in bob.sip.messages(call_id)), "the BYE at bob")
    events = read_events(broker.bootstrap, call_id=call_id, timeout=15,
                         until=lambda evs: any(e["type"] == "media.stats" for e in evs))
    (stats,) = [e for e in events if e["type"] == "media.stats"]
    assert stats["caller"]["packets"] == 40 and stats["callee"]["packets"] == 30, stats
    assert stats["relay"] == rtpe.url and stats["to_tag"] == bob.tag
    assert stats["caller"]["bytes"] == 40 * 172


def test_callee_silent_while_the_caller_talks_is_ended_by_media_timeout(proxy, rtpe, broker, phones):
    alice, bob = phones
    call_id, invite, ok = call(alice, bob, proxy)
    to_alice, to_bob = relayed_ports(rtpe, invite, ok)
    talking = threading.Event()
    talking.set()

    def alice_talks() -> None:
        seq = 0
        while talking.is_set():
            alice.send_rtp(to_bob, 1, seq)
            seq += 1
    speaker = threading.Thread(target=alice_talks)
    speaker.start()
    try:
        bob.send_rtp(to_alice, 25)                       # ~0.5 s of audio, then bob goes quiet
        bob_stopped_ms = clock.now_ms()
        byes = eventually(lambda: [m for p in (alice, bob) for m in p.sip.messages(call_id) if m.startswith("BYE")]
                          if len([m for p in (alice, bob) for m in p.sip.messages(call_id)
                                  if m.startswith("BYE")]) >= 2 else None,
                          "BYE to both phones", timeout=ONE_WAY_S + 2 + 5)
    finally:
        talking.clear()
        speaker.join()
    for bye in byes:
        assert header(bye, "Reason") == ['SIP;cause=408;text="media timeout: callee silent"'], bye
    events = read_events(broker.bootstrap, call_id=call_id, timeout=15,
                         until=lambda evs: {"media.timeout", "media.stats"} <= {e["type"] for e in evs})
    (timeout,) = [e for e in events if e["type"] == "media.timeout"]
    assert timeout["silent"] == "callee"
    # rtpengine stamps packets in whole seconds: the end is the callee's last second
    assert abs(timeout["last_media_ms"] - bob_stopped_ms) <= 1500, (timeout, bob_stopped_ms)
    kinds = [e["type"] for e in events]
    assert kinds.index("media.timeout") < kinds.index("media.stats")
    stats = next(e for e in events if e["type"] == "media.stats")
    assert stats["callee"]["packets"] == 25 and stats["caller"]["packets"] > 25, stats


def test_the_launcher_says_media_ready_after_a_pong_and_one_line_when_it_cannot(tmp_path):
    """What `sipledger up` runs for `[media] launch`: rtpengine up, its ng port in DATA_DIR/run/media.json."""
    from proxy.runtime.rtpengine import ping, read_ng
    from tests.harness.rtpengine import RTPENGINE, _media_range
    low, high = _media_range(20)
    config = tmp_path / "sipledger.toml"
    config.write_text(f'[media]\nenabled = true\nbinary = "{RTPENGINE}"\nport_min = {low}\nport_max = {high}\n')
    launcher = [sys.executable, "-m", "proxy.runtime.rtpengine", "--data-dir", str(tmp_path), "--config", str(config)]
    proc = subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("MEDIA READY ng=udp:127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else line
        url = read_ng(tmp_path)
        assert url is not None and url in line
        host, port = url.removeprefix("udp:").rsplit(":", 1)
        assert ping((host, int(port)), wait=1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0
    eventually(lambda: not ping((host, int(port)), wait=0.2), "rtpengine stopped with its launcher", timeout=5)

    config.write_text('[media]\nenabled = true\nbinary = "/nonexistent/rtpengine"\n')
    missing = subprocess.run(launcher, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("error: media: rtpengine binary /nonexistent/rtpengine")
