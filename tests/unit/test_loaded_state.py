"""What a proxy worker has loaded (proxy/runtime/loaded.py), and the tests' wait on it."""
from __future__ import annotations

import json
import threading

import pytest

from proxy.provisioning.store import ProvisioningStore, default_url
from proxy.routing.store import RoutingStore
from proxy.runtime.loaded import LoadedState, read_loaded, state_path
from tests.harness.proxy import store_versions, wait_until_loaded


def test_written_on_change_only_and_removed(tmp_path):
    state = LoadedState(tmp_path / "run", 1)
    assert state.update(3, 4, ["gw-b", "gw-a"]) is True
    assert json.loads(state_path(tmp_path / "run", 1).read_text()) == \
        {"worker": 1, "pid": state._last["pid"], "provisioning": 3, "routing": 4, "gateways_down": ["gw-a", "gw-b"]}
    assert state.update(3, 4, ["gw-a", "gw-b"]) is False              # nothing changed: not rewritten
    assert state.update(3, 5) is True
    LoadedState(tmp_path / "run", 0).update(1, 1)
    assert [(s["worker"], s["routing"]) for s in read_loaded(tmp_path / "run")] == [(0, 1), (1, 5)]
    assert not list((tmp_path / "run").glob("*.tmp"))
    state.remove()
    state.remove()                                                     # twice is fine
    assert [s["worker"] for s in read_loaded(tmp_path / "run")] == [0]


@pytest.fixture
def data_dir(tmp_path):
    for store_class in (ProvisioningStore, RoutingStore):
        store = store_class(default_url(tmp_path))
        store.create_schema()
        store.close()
    return tmp_path


def test_wait_until_loaded_waits_for_every_worker_to_reach_the_stores_versions(data_dir):
    store = ProvisioningStore(default_url(data_dir))
    store.add_domain("example.test")
    store.close()
    versions = store_versions(data_dir)
    assert versions["provisioning"] == 1
    workers = [LoadedState(data_dir / "run", i) for i in range(2)]
    for worker in workers:
        worker.update(0, versions["routing"])
    with pytest.raises(AssertionError, match=r"load \{'provisioning': 1, 'routing': 0\}; they show"):
        wait_until_loaded(data_dir, timeout=0.1)
    workers[0].update(1, versions["routing"], ["gw-x"])
    # the second worker reloads a moment later: the wait ends then
    later = threading.Timer(0.2, workers[1].update, (1, versions["routing"], ["gw-x"]))
    later.start()
    try:
        states = wait_until_loaded(data_dir, gateways_down=["gw-x"], workers=2, timeout=10)
    finally:
        later.cancel()
    assert [s["provisioning"] for s in states] == [1, 1]


def test_wait_until_loaded_needs_a_running_worker(data_dir):
    with pytest.raises(AssertionError, match="they show \\[\\]"):
        wait_until_loaded(data_dir, {"routing": 0}, timeout=0.05)
