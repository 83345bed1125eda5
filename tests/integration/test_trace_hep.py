"""SIP trace of a real call (docs/trace.md): a proxy with `[trace] enabled`
and HEP to a real receiver, Debian's sngrep, which must decode our HEP v3 and
write the call's INVITE / 200 / BYE to its pcap; the same messages reach the
`sip.trace` topic as TraceRecords."""
from __future__ import annotations

import contextlib
import shutil
import subprocess

import msgspec
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.routes.trace import pcap_bytes
from proxy.contract.trace import TraceRecord
from proxy.infra.kafka import ensure_topics_sync
from proxy.trace import pcap
from proxy.trace.ladder import render
from tests.harness.broker import settings_for
from tests.harness.poll import eventually
from tests.harness.procs import terminate
from tests.harness.proxy import proxy_run, read_events
from tests.harness.sipp import SippResult, SippUAS, free_udp_port, run_uac

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
        terminate(proc)


@contextlib.contextmanager
def proxy_with_gateway(tmp_path, broker, trace: str, script: str = ""):
    """A proxy routing 0… to a SIPp gateway that answers; ``trace``: the [trace] section's keys."""
    data = tmp_path / "data"
    ensure_topics_sync(settings_for(broker), {"sip.trace": 1})      # `up` creates it (api/supervisor.py)
    with SippUAS("uas_answer", timeout=20, calls=2) as gw:
        cli(data, "domain", "add", "example.test")
        cli(data, "gateway", "add", "gw1", "--address", f"127.0.0.1:{gw.port}")
        cli(data, "route", "add", "--prefix", "0", "--gateways", "gw1")
        config = tmp_path / "sipledger.toml"
        script_line = ""
        if script:
            (tmp_path / "route.py").write_text(script)
            script_line = f'routing_script = "{tmp_path / "route.py"}"\n'
        config.write_text(f"""[proxy]
trusted_sources = ["127.0.0.0/8"]
{script_line}[authorization]
enabled = false
[trace]
{trace}
""")
        sip_port = free_udp_port()
        with proxy_run(data, config, sip_port, broker.bootstrap):
            yield sip_port, gw


def call(tmp_path, sip_port: int, number: str) -> str:
    return call_logged(tmp_path, sip_port, number).sent("INVITE")[0].header("Call-ID")


def call_logged(tmp_path, sip_port: int, number: str) -> SippResult:
    res = run_uac("uac_plain_call", ("127.0.0.1", sip_port),
                  {"caller": "+4930999", "callee": number, "domain": "example.test"}, 15,
                  workdir=tmp_path, hold_ms=100)
    assert res.ok, res.describe()
    return res


def sipp_side(res: SippResult, call_id: str) -> list[tuple[str, str]]:
    """SIPp's message log of one call as the proxy saw it: what SIPp sent came
    in, what it received went out; (direction, start line) in SIPp's order."""
    return [("in" if m.direction == "sent" else "out", m.start_line)
            for m in res.messages if m.header("Call-ID") == call_id]


def trace_side(records: list[TraceRecord], port: int) -> list[tuple[str, str]]:
    """The captures exchanged with the party at ``port``, in capture order."""
    mine = [r for r in sorted(records, key=lambda r: r.id)
            if (r.direction == "in" and r.src_port == port) or (r.direction == "out" and r.dst_port == port)]
    return [(r.direction, r.raw.split("\r\n", 1)[0]) for r in mine]


def of_call(hep_pcap, call_id: str) -> list[bytes]:
    return [p for p in sip_payloads(hep_pcap.read_bytes()) if call_id.encode() in p] if hep_pcap.exists() else []


def starts(payloads: list[bytes]) -> dict[bytes, int]:
    kinds = (b"INVITE ", b"ACK ", b"BYE ", b"SIP/2.0 200")
    return {k: sum(p.startswith(k) for p in payloads) for k in kinds}


# both legs, both directions: caller → proxy → gateway and back (200s of INVITE and BYE)
WHOLE_CALL = {b"INVITE ": 2, b"ACK ": 2, b"BYE ": 2, b"SIP/2.0 200": 4}


def test_a_traced_call_reaches_sngrep_over_hep_and_the_trace_topic(tmp_path, broker, sngrep):
    hep_port, hep_pcap = sngrep
    trace = f'enabled = true\nhep = ["udp:127.0.0.1:{hep_port}"]\nhep_capture_id = 77'
    with proxy_with_gateway(tmp_path, broker, trace) as (sip_port, gw):
        caller = call_logged(tmp_path, sip_port, "0301234")
        call_id = caller.sent("INVITE")[0].header("Call-ID")
        payloads = eventually(lambda: (p := of_call(hep_pcap, call_id)) and starts(p) == WHOLE_CALL and p,
                              "sngrep's pcap to hold the whole call (INVITE, 200, ACK, BYE)", timeout=10)
        def of(batches: list[dict]) -> list[dict]:
            return [r for b in batches for r in b["records"] if r["call_id"] == call_id]
        records = of(read_events(broker.bootstrap, topic="sip.trace", timeout=10,
                                 until=lambda bs: len(of(bs)) >= len(payloads)))
        # the stored copy and the HEP copy are the same captures
        assert sorted(r["raw"].split("\r\n", 1)[0] for r in records) == \
            sorted(p.split(b"\r\n", 1)[0].decode() for p in payloads)
        invites = [r for r in records if r["method"] == "INVITE"]
        assert sorted(r["direction"] for r in invites) == ["in", "out"]
        received = next(r for r in invites if r["direction"] == "in")
        assert received["dst_port"] == sip_port and received["cseq"] == "2 INVITE"
        sent = next(r for r in invites if r["direction"] == "out")
        assert sent["dst_port"] == gw.port and sent["src_port"] == sip_port
        gw.wait_for("BYE", 10)          # a proxy passes the Call-ID on: the same call on both sides
        callee = gw.result()
    # the trace is what both phones logged, message for message, in their order
    traced = [msgspec.convert(r, TraceRecord) for r in records]
    assert trace_side(traced, received["src_port"]) == sipp_side(caller, call_id)
    assert trace_side(traced, gw.port) == sipp_side(callee, call_id)
    # and the ladder `sipledger trace` prints has one arrow per message, labelled as SIPp logged it
    ladder = render(traced)[1:]
    assert len(ladder) == len(traced) == len(sipp_side(caller, call_id)) * 2
    labels = [r.label for r in sorted(traced, key=lambda r: (r.ts_ms, r.id))]
    assert all(label in line for label, line in zip(labels, ladder, strict=True)), "\n".join(ladder)
    # the pcap `sipledger trace --pcap` writes is read back by sngrep as the same SIP messages
    ours, again = tmp_path / "ours.pcap", tmp_path / "again.pcap"
    ours.write_bytes(pcap_bytes([msgspec.convert(r, TraceRecord) for r in records]))
    subprocess.run(["sngrep", "-N", "-q", "-I", str(ours), "-O", str(again)], timeout=10, check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    assert sorted(sip_payloads(again.read_bytes())) == sorted(r["raw"].encode() for r in records)


SCRIPT = """from proxy.script.default import route as default_route


def route(ctx):
    if ctx.method == "INVITE" and ctx.ruri.user == "0307777":
        ctx.trace()
    return default_route(ctx)
"""


def test_ctx_trace_captures_that_call_only_and_all_its_later_messages(tmp_path, broker, sngrep):
    hep_port, hep_pcap = sngrep
    with proxy_with_gateway(tmp_path, broker, f'hep = ["udp:127.0.0.1:{hep_port}"]', SCRIPT) as (sip_port, _gw):
        untraced = call(tmp_path, sip_port, "0301234")
        traced = call(tmp_path, sip_port, "0307777")
        eventually(lambda: starts(of_call(hep_pcap, traced)) == WHOLE_CALL,
                   "sngrep's pcap to hold the whole flagged call", timeout=10)
        assert of_call(hep_pcap, untraced) == []
