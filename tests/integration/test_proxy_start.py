"""The proxy's process tree starts on a fresh data dir with several workers."""
from __future__ import annotations

import signal
import subprocess
import sys

from tests.harness.sipp import free_udp_port


def test_two_workers_start_on_a_fresh_data_dir(tmp_path, broker):
    # regression: workers racing to create the SQLite schemas failed with
    # "database is locked" on the very first start
    config = tmp_path / "sipledger.toml"
    config.write_text("[proxy]\nworkers = 4\n[authorization]\nenabled = false\n")   # no billing here
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--data-dir", str(tmp_path / "fresh"),
         "--config", str(config), "--sip-port", str(free_udp_port()), "--bootstrap", broker.bootstrap],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PROXY READY workers=4"), proc.stderr.read() if proc.poll() is not None else line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert (tmp_path / "fresh" / "provisioning.sqlite").exists()
