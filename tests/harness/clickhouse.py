"""A real ClickHouse server for tests: Debian's clickhouse-server 18.16, started by
hand (no systemd) on a free loopback port with its own config, users and data
dir under the test's tmp dir, and stopped by PID.

``ClickHouseServer(dir).start()`` writes a minimal config.xml / users.xml
(native protocol on 127.0.0.1 only, no HTTP, a ``sipledger`` user with a
password), waits until ``SELECT 1`` answers and returns.  The session-wide
``clickhouse_server`` fixture (tests/conftest.py) starts one.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.harness.poll import eventually

BINARY_CANDIDATES = ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")
USER, PASSWORD = "sipledger", "test-password"

CONFIG_XML = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{dir}/log/server.log</log>
    <errorlog>{dir}/log/error.log</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{port}</tcp_port>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>53687091</mark_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
</yandex>
"""

USERS_XML = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>2000000000</max_memory_usage>
    </default>
  </profiles>
  <users>
    <{user}>
      <password>{password}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </{user}>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
        <read_rows>0</read_rows><execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
"""


class ClickHouseServerError(RuntimeError):
    pass


def server_binary() -> str | None:
    found = shutil.which("clickhouse-server")
    if found:
        return found
    return next((c for c in BINARY_CANDIDATES if os.access(c, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClickHouseServer:
    host = "127.0.0.1"
    user = USER
    password = PASSWORD

    def __init__(self, directory: Path, *, start_timeout: float = 30.0) -> None:
        self.dir = Path(directory)
        self.port = 0
        self.start_timeout = start_timeout
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> "ClickHouseServer":
        binary = server_binary()
        if binary is None:
            raise ClickHouseServerError("clickhouse-server is not installed")
        for attempt in range(3):     # a free port can be taken before the server binds it
            self.port = _free_port()
            for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)
            (self.dir / "config.xml").write_text(CONFIG_XML.format(dir=self.dir, port=self.port))
            (self.dir / "users.xml").write_text(USERS_XML.format(user=USER, password=PASSWORD))
            out = open(self.dir / "log" / "stdout.log", "ab")
            try:
                self._process = subprocess.Popen(
                    [binary, f"--config-file={self.dir / 'config.xml'}"], cwd=self.dir,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            finally:
                out.close()
            if self._wait_ready():
                return self
            self.stop()
        raise ClickHouseServerError(f"clickhouse-server did not start; see {self.dir / 'log'}")

    def _wait_ready(self) -> bool:
        """True once ``SELECT 1`` answers; False if the server exits or the time runs out."""
        from clickhouse_driver import Client

        def answers() -> str | None:
            if self._process.poll() is not None:
                return "exited"
            try:
                client = Client(self.host, port=self.port, user=USER, password=PASSWORD,
                                connect_timeout=1)
                try:
                    client.execute("SELECT 1")
                    return "ready"
                finally:
                    client.disconnect()
            except Exception:
                return None

        return eventually(answers, timeout=self.start_timeout, fail=False) == "ready"

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            process.wait()

    def backend(self, database: str):
        from proxy.infra.clickhouse.backend import ServerBackend
        return ServerBackend(self.host, self.port, database, USER, PASSWORD)

    def __enter__(self) -> "ClickHouseServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- a hand-made CDR set with known statistics (store and API tests) ---------------

def sample_calls():
    """Nine calls over two days (2026-11-27/28, UTC) whose filters and RFC 6076
    figures are worked out by hand in tests/integration/test_cdr_store.py.
    Returns {name: [CdrLeg, ...]}; cdr ids are real (UUIDv5)."""
    from datetime import datetime, timezone

    from proxy.contract.cdr import CdrLeg, cdr_id_for

    t0 = int(datetime(2026, 11, 27, 10, tzinfo=timezone.utc).timestamp() * 1000)
    hour, day = 3_600_000, 86_400_000
    people = {
        "alice": dict(account="alice@a.test", caller_uri="sip:+4930111@a.test", caller_ip="192.0.2.10",
                      domain="a.test", caller_user_agent="Phone/1.0"),
        "bob": dict(account="bob@b.test", caller_uri="<sip:+3311@b.test>", caller_ip="198.51.100.7",
                    domain="b.test"),
        "carol": dict(account="carol@c.test", caller_uri="sip:carol@c.test", caller_ip="2001:db8::5",
                      domain="c.test"),
    }

    def call(name, who, setup, number, legs, *, call_code, call_disposition, hangup_by="none"):
        cid = cdr_id_for(f"{name}@test", f"tag-{name}")
        out = []
        for i, leg in enumerate(legs):
            base = dict(cdr_id=cid, leg=i, legs=len(legs), call_id=f"{name}@test", from_tag=f"tag-{name}",
                        dialled=f"sip:{number}@{people[who]['domain']}", callee_uri=f"sip:{number}@x",
                        call_sip_code=call_code, call_sip_reason=f"reason {call_code}",
                        call_disposition=call_disposition, hangup_by=hangup_by, proxy="px1",
                        **people[who])
            leg = dict(leg)
            leg_setup = setup + leg.pop("offset", 0)
            end = leg_setup + leg.pop("end_after", 1000)
            for key in ("ringing_ms", "answer_ms"):
                if leg.get(key):
                    leg[key] += setup
            base.update(setup_ms=leg_setup, end_ms=end, **leg)
            out.append(CdrLeg(**base))
        return out

    return {
        "c1": call("c1", "alice", t0, "+4989001",
                   [dict(gateway="gw-de", target="sip:+4989001@gw-de", ringing_ms=200, answer_ms=2000,
                         duration_ms=60_000, billable_s=60, pdd_ms=200, sip_code=200,
                         disposition="answered", end_after=62_000)],
                   call_code=200, call_disposition="answered", hangup_by="caller"),
        "c2": call("c2", "alice", t0 + 60_000, "+4989002",
                   [dict(gateway="gw-de", pdd_ms=100, sip_code=486, disposition="busy")],
                   call_code=486, call_disposition="busy"),
        "c3": call("c3", "bob", t0 + 120_000, "+33155",
                   [dict(gateway="gw-fr", ringing_ms=300, pdd_ms=300, sip_code=480, disposition="no_answer")],
                   call_code=480, call_disposition="no_answer"),
        "c4": call("c4", "bob", t0 + 180_000, "+33156",
                   [dict(gateway="gw-fr", pdd_ms=50, sip_code=503, disposition="failed", end_after=60),
                    dict(offset=60, parent_leg=0, leg_cause="failover", gateway="gw-de",
                         ringing_ms=400, answer_ms=1000, duration_ms=30_000, billable_s=30, pdd_ms=340,
                         sip_code=200, disposition="answered", end_after=31_000,
                         # relayed through rtpengine; the callee's phone sent no RTCP
                         caller_rtp_packets=1500, caller_rtp_bytes=258_000, caller_rtp_lost=4,
                         caller_rtp_jitter_ms=2, caller_rtp_mos_x10=42, callee_rtp_packets=1490,
                         callee_rtp_bytes=256_280, callee_rtp_errors=1, media_relay="udp:127.0.0.1:2223",
                         last_media_ms=t0 + 180_000 + 60 + 30_990)],
                   call_code=200, call_disposition="answered", hangup_by="callee"),
        "c5": call("c5", "carol", t0 + hour, "+4930555",
                   [dict(ringing_ms=250, pdd_ms=250, sip_code=487, disposition="cancelled")],
                   call_code=487, call_disposition="cancelled", hangup_by="caller"),
        "c6": call("c6", "carol", t0 + hour + 10_000, "+4930556",
                   [dict(sip_code=487, disposition="cancelled")],
                   call_code=487, call_disposition="cancelled", hangup_by="caller"),
        "c7": call("c7", "alice", t0 + day, "+4989003",
                   [dict(gateway="gw-de", pdd_ms=80, sip_code=503, disposition="failed")],
                   call_code=503, call_disposition="failed"),
        "c8": call("c8", "alice", t0 + day + 10_000, "+4989004",
                   [dict(sip_code=402, disposition="rejected_credit")],
                   call_code=402, call_disposition="rejected_credit"),
        "c9": call("c9", "alice", t0 + day + 20_000, "+4989005",
                   [dict(pdd_ms=30, sip_code=302, disposition="failed")],
                   call_code=302, call_disposition="failed"),
    }


def sample_t0() -> int:
    from datetime import datetime, timezone
    return int(datetime(2026, 11, 27, 10, tzinfo=timezone.utc).timestamp() * 1000)
