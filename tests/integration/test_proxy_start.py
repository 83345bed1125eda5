"""The proxy's process tree starts on a fresh data dir with several workers."""
from __future__ import annotations

from tests.harness.proxy import proxy_run
from tests.harness.sipp import free_udp_port


def test_two_workers_start_on_a_fresh_data_dir(tmp_path, broker):
    # regression: workers racing to create the SQLite schemas failed with
    # "database is locked" on the very first start
    config = tmp_path / "sipledger.toml"
    config.write_text("[proxy]\nworkers = 4\n[authorization]\nenabled = false\n")   # no billing here
    with proxy_run(tmp_path / "fresh", config, free_udp_port(), broker.bootstrap, ready="PROXY READY workers=4"):
        pass                                   # READY: every worker opened the stores
    assert (tmp_path / "fresh" / "provisioning.sqlite").exists()


def test_workers_take_their_own_ports_from_the_configured_base(tmp_path, broker):
    """`[proxy] worker_port_base`: worker i answers on base + i (UDP and TCP), ports a
    container can publish (compose/); 0 keeps any free port."""
    import socket

    def free_pair() -> int:
        for _ in range(20):
            base = free_udp_port()
            try:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    for port in (base, base + 1):
                        with socket.socket(socket.AF_INET, kind) as s:
                            s.bind(("127.0.0.1", port))
                return base
            except OSError:
                continue
        raise AssertionError("no two free ports in a row")

    base = free_pair()
    config = tmp_path / "sipledger.toml"
    config.write_text(f"[proxy]\nworkers = 2\nworker_port_base = {base}\n[authorization]\nenabled = false\n")
    with proxy_run(tmp_path / "d", config, free_udp_port(), broker.bootstrap, ready="PROXY READY workers=2"):
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            for port in (base, base + 1):
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", port))
                    except OSError:
                        continue                    # held by its worker
                    raise AssertionError(f"{kind.name} port {port} is not a worker's")
