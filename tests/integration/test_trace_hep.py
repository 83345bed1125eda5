"""SIP trace of a real call (docs/trace.md): a proxy with `[trace] enabled`
and HEP to a real receiver, Debian's sngrep, which must decode our HEP v3 and
write the call's INVITE / 200 / BYE to its pcap; the same messages reach the
`sip.trace` topic as TraceRecords."""
from __future__ import annotations

import shutil
import signal
import subprocess

import pytest
from typer.testing import CliRunner

from api.cli import app
from proxy.infra.kafka import ensure_topics_sync
from proxy.trace import pcap
from tests.harness.broker import settings_for
from tests.harness.poll import eventually
from tests.harness.proxy import proxy_run, read_events
from tests.harness.sipp import SippUAS, free_udp_port, run_uac

pytestmark = pytest.mark.skipif(shutil.which("sngrep") is None or shutil.which("sipp") is None,
                                reason="sngrep and SIPp needed (quickstart.sh installs them)")


def cli(data_dir, *args):
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])
    assert result.exit_code == 0, result.output


def sip_payloads(data: bytes) -> list[bytes]:
    """The UDP payloads of sngrep's pcap (Ethernet + IPv4 frames)."""
    out = []
    for _ts, frame in pcap.read(data):
        ip = frame[14:] if pcap.linktype(data) == 1 else frame
        header = (ip[0] & 0x0F) * 4
        out.append(ip[header + 8:])
    return out


@pytest.fixture
def sngrep(tmp_path):
    port = free_udp_port()
    out = tmp_path / "sngrep.pcap"
    proc = subprocess.Popen(["sngrep", "-N", "-q", "-L", f"udp:127.0.0.1:{port}", "-O", str(out)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        eventually(lambda: f":{port:04X}" in open("/proc/net/udp").read() or proc.poll() is not None,
                   "sngrep listening", timeout=5)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield port, out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_a_traced_call_reaches_sngrep_over_hep_and_the_trace_topic(tmp_path, broker, sngrep):
    hep_port, hep_pcap = sngrep
    data = tmp_path / "data"
    ensure_topics_sync(settings_for(broker), {"sip.trace": 1})      # `up` creates it (api/supervisor.py)
    with SippUAS("uas_answer", timeout=20) as gw:
        cli(data, "domain", "add", "example.test")
        cli(data, "gateway", "add", "gw1", "--address", f"127.0.0.1:{gw.port}")
        cli(data, "route", "add", "--prefix", "0", "--gateways", "gw1")
        config = tmp_path / "sipledger.toml"
        config.write_text(f"""[proxy]
trusted_sources = ["127.0.0.0/8"]
[authorization]
enabled = false
[trace]
enabled = true
hep = ["udp:127.0.0.1:{hep_port}"]
hep_capture_id = 77
""")
        sip_port = free_udp_port()
        with proxy_run(data, config, sip_port, broker.bootstrap):
            res = run_uac("uac_plain_call", ("127.0.0.1", sip_port),
                          {"caller": "+4930999", "callee": "0301234", "domain": "example.test"}, 15,
                          workdir=tmp_path, hold_ms=100)
            assert res.ok, res.describe()
            call_id = res.sent("INVITE")[0].header("Call-ID")
            wanted = {b"INVITE", b"SIP/2.0 200", b"BYE"}

            def seen() -> set[bytes]:
                got = set()
                for payload in sip_payloads(hep_pcap.read_bytes()) if hep_pcap.exists() else []:
                    if call_id.encode() in payload:
                        got |= {w for w in wanted if payload.startswith(w)}
                return got
            eventually(lambda: seen() == wanted, "sngrep's pcap to hold the INVITE, 200 and BYE", timeout=10)
            payloads = [p for p in sip_payloads(hep_pcap.read_bytes()) if call_id.encode() in p]
            # both legs, both directions: caller → proxy → gateway and back
            assert sum(p.startswith(b"INVITE ") for p in payloads) == 2
            assert sum(p.startswith(b"BYE ") for p in payloads) == 2
            assert sum(p.startswith(b"SIP/2.0 200") for p in payloads) >= 4

            records = read_events(broker.bootstrap, topic="sip.trace", call_id=call_id, timeout=10,
                                  until=lambda rs: len(rs) >= len(payloads))
            # the stored copy and the HEP copy are the same captures
            assert sorted(r["raw"].split("\r\n", 1)[0] for r in records) == \
                sorted(p.split(b"\r\n", 1)[0].decode() for p in payloads)
            invites = [r for r in records if r["method"] == "INVITE"]
            assert sorted(r["direction"] for r in invites) == ["in", "out"]
            received = next(r for r in invites if r["direction"] == "in")
            assert received["dst_port"] == sip_port and received["cseq"] == "2 INVITE"
            sent = next(r for r in invites if r["direction"] == "out")
            assert sent["dst_port"] == gw.port and sent["src_port"] == sip_port
