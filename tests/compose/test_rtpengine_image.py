"""The rtpengine container's command line and health check, run by Debian's rtpengine.

compose/rtpengine/Dockerfile's ENTRYPOINT plus the compose service's command is
the rtpengine this machine has (bookworm's 10.5); the test runs exactly those
options with the container's addresses and ports swapped for loopback ones,
then the image's HEALTHCHECK command, and an ng ping as the proxies send it."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest

from tests.harness.compose import COMPOSE_DIR, dockerfile_commands, resolved
from tests.harness.poll import eventually
from tests.harness.procs import terminate
from tests.harness.proxy import free_tcp_port
from tests.harness.sipp import free_udp_port

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None or shutil.which("rtpengine-ctl") is None,
                                reason="rtpengine is not installed")


def _image() -> tuple[list[str], list[str]]:
    commands = {c.cmd.upper(): list(c.value) for c in dockerfile_commands(COMPOSE_DIR / "rtpengine" / "Dockerfile")}
    service = resolved()["services"]["rtpengine"]
    return commands["ENTRYPOINT"] + service["command"], commands["HEALTHCHECK"]


def test_rtpengine_runs_the_container_options_and_answers_its_health_check(tmp_path):
    argv, health = _image()
    ng, cli = free_udp_port(), free_tcp_port()
    local = {
        r"--listen-ng=.*": f"--listen-ng=127.0.0.1:{ng}",
        r"--listen-cli=127\.0\.0\.1:(\d+)": f"--listen-cli=127.0.0.1:{cli}",
        r"--interface=[^!]+!.*": "--interface=127.0.0.1!127.0.0.1",
        r"--pidfile=.*": f"--pidfile={tmp_path / 'rtpengine.pid'}",
    }
    for pattern in local:
        assert sum(bool(re.fullmatch(pattern, arg)) for arg in argv) == 1, (pattern, argv)
    run = [next((new for pattern, new in local.items() if re.fullmatch(pattern, arg)), arg) for arg in argv]
    cli_port = re.fullmatch(r"--listen-cli=127\.0\.0\.1:(\d+)", next(a for a in argv if a.startswith("--listen-cli")))
    assert health[:1] == ["CMD"] and cli_port is not None
    check = [str(cli) if arg == cli_port.group(1) else arg for arg in health[1:]]
    assert check != health[1:]                                   # the health check asks the CLI port
    proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: proc.poll() is None and subprocess.run(check, capture_output=True, timeout=10).returncode == 0,
                   "rtpengine-ctl answered", timeout=20)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"c1 d7:command4:pinge", ("127.0.0.1", ng))
            assert sock.recv(1000) == b"c1 d6:result4:ponge"
    finally:
        terminate(proc)
    # and it fails when rtpengine is gone
    assert subprocess.run(check, capture_output=True, timeout=10).returncode != 0
