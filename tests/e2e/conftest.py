"""Fixtures for the SIPp end-to-end tests (SIPp callees, per-test log dirs).

The provisioned `sipledger up` fixtures live in the test modules themselves
(they need the modules' test data)."""
from __future__ import annotations

import pytest

from tests.harness.sipp import SippUAS, sipp_available


def pytest_collection_modifyitems(config, items):
    if sipp_available():
        return
    skip = pytest.mark.skip(reason="sipp (SIPp 3.6.1, Debian sip-tester) is not installed")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


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
