"""Shared fixtures.  Helpers live in tests/harness; keep this file to fixtures."""
from __future__ import annotations

import os

import pytest
from hypothesis import settings as hypothesis_settings

from api.broker import EmbeddedBroker
from proxy.infra.config import KafkaSettings
from tests.harness.broker import settings_for, start_broker
from tests.harness.clickhouse import ClickHouseServer

# CI explores the same examples every run (a red CI is then a regression, not
# a lucky draw); developers' runs keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


# --- Parallel runs (pytest-xdist) -------------------------------------------------

def pytest_xdist_make_scheduler(config, log):
    """Each file, and each folder sharing one `up`, in one process (tests/harness/xdist.py)."""
    from tests.harness.xdist import FolderOrFileScheduling
    return FolderOrFileScheduling(config, log)


# --- Kafka (embedded Tansu broker) -------------------------------------------

@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> EmbeddedBroker:
    """One broker for the session, with sip.events and call.control.  Tests that
    stop or restart a broker use ``fresh_broker`` instead."""
    started = start_broker(tmp_path_factory.mktemp("broker"))
    yield started
    started.stop()


@pytest.fixture
def fresh_broker(tmp_path) -> EmbeddedBroker:
    """A broker of the test's own (sip.events and call.control created): free to stop and restart."""
    started = start_broker(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def kafka_settings(broker) -> KafkaSettings:
    return settings_for(broker)


# --- ClickHouse (Debian's clickhouse-server 18.16) --------------------------------

@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory) -> ClickHouseServer:
    """One clickhouse-server 18.16 for the session.  Not installed is a failure,
    not a skip: the storage suite must run on both back ends."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    yield server
    server.stop()
