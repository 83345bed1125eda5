"""`sipledger up` is honest: READY only when every service is ready; otherwise
one line naming the cause, a non-zero exit and no process left behind; and
nothing outlives it, not even after ``kill -9``.

Every `up` here runs with SIPLEDGER_DATA_DIR set to its own data dir, and
every process it starts inherits that environment: a process whose
/proc/PID/environ holds it belongs to that `up` (the broker included, whose
command line does not name the data dir)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from proxy.infra.config import RUN_DIR
from proxy.infra.pidlock import PidLock
from tests.harness.proxy import REPO, SipledgerProcess, _alive, _descendants, cli_command, free_tcp_port
from tests.harness.sipp import free_udp_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


def up_env(data_dir: Path, config_text: str | None = None) -> dict[str, str]:
    env = dict(os.environ, SIPLEDGER_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("SIPLEDGER_CONFIG", None)
    if config_text is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "sipledger.toml").write_text(config_text)
    return env


def run_up(data_dir: Path, *args: str, config_text: str | None = None) -> subprocess.CompletedProcess:
    """`sipledger up` expected to fail: run it to its exit."""
    return subprocess.run(cli_command() + ["up", *args], cwd=REPO, env=up_env(data_dir, config_text),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def processes_of(data_dir: Path) -> list[int]:
    """Live processes started for this data dir (found by their environment)."""
    marker = f"SIPLEDGER_DATA_DIR={data_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if marker in environ and _alive(int(entry)):
            found.append(int(entry))
    return found


def wait_until_gone(pids, timeout: float = 30.0) -> list[int]:
    """The pids still alive when they are all gone or ``timeout`` ran out."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def assert_refused(result: subprocess.CompletedProcess, data_dir: Path, expected: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode != 0, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "READY" not in result.stdout
    assert processes_of(data_dir) == []


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return (tmp_path / "data").resolve()


def test_sip_port_taken_by_another_program(data_dir):
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind((HOST, port))
        tcp.bind((HOST, port))
        tcp.listen()
        result = run_up(data_dir, "--sip-port", str(port), "--api-port", str(free_tcp_port()))
    assert_refused(result, data_dir, f"error: proxy: SIP port {HOST}:{port} is in use")
    # the proxy said why once, no restart loop of tracebacks
    assert "Traceback" not in (data_dir / "logs" / "proxy.log").read_text()


def test_api_port_taken_by_another_program(data_dir):
    with socket.socket() as tcp:
        tcp.bind((HOST, 0))
        tcp.listen()
        api_port = tcp.getsockname()[1]
        result = run_up(data_dir, "--sip-port", str(free_udp_port()), "--api-port", str(api_port))
    assert_refused(result, data_dir, f"error: api: API port {HOST}:{api_port} is in use")


def test_sip_port_out_of_range_is_refused_before_anything_starts(data_dir):
    result = run_up(data_dir, "--sip-port", "70000")
    assert_refused(result, data_dir, "key 'proxy.sip_port': must be 1..65535")
    assert not (data_dir / "logs").exists()


def test_bad_config_is_refused_before_anything_starts(data_dir):
    result = run_up(data_dir, "--sip-port", str(free_udp_port()), config_text="[cdr]\nbatch_size = 0\n")
    assert_refused(result, data_dir, "key 'cdr.batch_size': must be 1..100000")
    assert not (data_dir / "logs").exists()


def test_credit_control_without_billing_is_refused(data_dir):
    result = run_up(data_dir, "--sip-port", str(free_udp_port()), config_text="[billing]\nenabled = false\n")
    assert_refused(result, data_dir, "key 'authorization.enabled': credit control needs billing")
    assert "set authorization.enabled = false" in result.stderr
    assert not (data_dir / "logs" / "broker.log").exists()


def test_data_dir_in_use_by_another_up(data_dir):
    # this test process stands in for the `up` that holds the data dir
    lock = PidLock(data_dir / RUN_DIR / "up.lock").acquire()
    try:
        result = run_up(data_dir, "--sip-port", str(free_udp_port()), "--api-port", str(free_tcp_port()))
    finally:
        lock.release()
    assert_refused(result, data_dir,
                   f"error: data dir {data_dir} is in use by another sipledger up (pid {os.getpid()})")
    assert not (data_dir / "logs" / "broker.log").exists()


def test_every_child_dies_with_up_even_on_kill_9(data_dir):
    sl = SipledgerProcess(data_dir, free_udp_port())
    try:
        sl.start(timeout=120)
        assert " credit=on " in sl.ready_line          # the default: billing runs, credit control on
        children = _descendants(sl.proc.pid)
        started = " | ".join(" ".join(_cmdline(p)) for p in children)
        for part in ("tansu broker", "-m proxy run", "-m proxy worker", "-m api.serve", "-m cdr", "-m billing"):
            assert part in started, started
        os.kill(sl.proc.pid, signal.SIGKILL)
        sl.proc.wait(timeout=10)
        assert wait_until_gone(children) == [], [(p, _cmdline(p)) for p in children if _alive(p)]
        assert processes_of(data_dir) == []
    finally:
        sl.stop()


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []
