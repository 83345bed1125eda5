"""Fixtures for the SIPp end-to-end tests (SIPp callees, per-test log dirs).

``default_up`` is one `sipledger up` with the default configuration (plus the
test domain and users), shared by every module that needs nothing else: a start
costs ~15 s, so sharing saves a minute of the suite.  Those modules leave it
as they found it (un-REGISTER, clear forwarding, counters compared as deltas).
Modules that need another configuration start their own `up`.

Package scope, not session: an idle `up` still costs about half a core (the
embedded broker answering its consumers' polls), so the shared ones stop when
the last e2e test is done instead of slowing the rest of the suite."""
from __future__ import annotations

import pytest

from tests.harness.calls import SHORT_MAX_DIALOG, start_sipledger
from tests.harness.sipp import SippUAS, sipp_available


def pytest_collection_modifyitems(config, items):
    if sipp_available():
        return
    skip = pytest.mark.skip(reason="sipp (SIPp 3.6.1, Debian sip-tester) is not installed")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="package")
def default_up(tmp_path_factory):
    """`sipledger up` with the default configuration and an admin REST client (``.client``)."""
    sl = start_sipledger(tmp_path_factory.mktemp("sipledger-default") / "data")
    try:
        sl.admin_client()
    except BaseException:
        sl.stop()
        raise
    yield sl
    sl.stop()


@pytest.fixture(scope="package")
def short_dialogs_up(tmp_path_factory):
    """`sipledger up` whose dialogs last at most SHORT_MAX_DIALOG seconds (the dialog modules share it)."""
    sl = start_sipledger(tmp_path_factory.mktemp("sipledger-short-dialogs") / "data", max_dialog=SHORT_MAX_DIALOG)
    yield sl
    sl.stop()


@pytest.fixture
def sipp_dir(tmp_path):
    """Where this test's SIPp logs go (kept by pytest for post-mortems)."""
    d = tmp_path / "sipp"
    d.mkdir()
    return d


@pytest.fixture
def uas_factory(sipp_dir):
    """Start SIPp callees; every one is stopped (by PID) when the test ends."""
    started: list[SippUAS] = []

    def make(scenario: str, **kw) -> SippUAS:
        kw.setdefault("timeout", 30)
        uas = SippUAS(scenario, workdir=sipp_dir, **kw).start()
        started.append(uas)
        return uas

    make.workdir = sipp_dir
    yield make
    for uas in started:
        uas.stop()
