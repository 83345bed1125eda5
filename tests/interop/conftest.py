"""Fixtures of the interoperability suite: one `sipledger up` with the DEFAULT
configuration (no config file: auth on, its default challenges) for the whole
folder, and the real SIP stacks of Debian around it, each stopped by PID when
its test ends.

A missing binary is a failure, not a skip: `./quickstart.sh test` installs
baresip-core, sipsak, kamailio and sip-tester."""
from __future__ import annotations

import shutil

import pytest

from tests.e2e.conftest import sipp_dir, uas_factory  # noqa: F401  (SIPp callees, stopped by PID)
from tests.harness.baresip import Baresip, baresip_available
from tests.harness.calls import DOMAIN, PASSWORDS
from tests.harness.kamailio import KamailioProxy, kamailio_available
from tests.harness.proxy import SipledgerProcess
from tests.harness.sipp import free_udp_port, sipp_available

REQUIRED = {"baresip (Debian baresip-core)": baresip_available,
            "sipsak (Debian sipsak)": lambda: shutil.which("sipsak") is not None,
            "kamailio (Debian kamailio)": kamailio_available,
            "sipp (Debian sip-tester)": sipp_available}


@pytest.fixture(scope="package", autouse=True)
def interop_tools():
    missing = [name for name, available in REQUIRED.items() if not available()]
    if missing:
        pytest.fail("not installed: " + ", ".join(missing) + " (./quickstart.sh test installs them)")


@pytest.fixture(scope="package")
def sl(tmp_path_factory):
    """`sipledger up` with no config file at all (the defaults), example.test with
    alice, bob and carol, and an admin API client (``sl.client``)."""
    sl = SipledgerProcess(tmp_path_factory.mktemp("interop-sipledger") / "data", free_udp_port())
    try:
        sl.domain_add(DOMAIN)
        for user, password in PASSWORDS.items():
            sl.user_add(f"{user}@{DOMAIN}", password)
        sl.start(timeout=60)
        sl.admin_client()
    except BaseException:
        sl.stop()
        raise
    yield sl
    sl.stop()


@pytest.fixture
def phones(tmp_path, sl):
    """Start baresip phones registered at sipledger: ``phones("alice", auto_answer=True)``."""
    started: list[Baresip] = []

    def make(user: str, *, auto_answer: bool = False, outbound=None) -> Baresip:
        phone = Baresip(tmp_path / f"baresip-{user}", user, DOMAIN, PASSWORDS[user], sl.sip_addr,
                        auto_answer=auto_answer, outbound=outbound)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        phone.stop()


@pytest.fixture
def kamailios(tmp_path):
    """Start Kamailio peers: ``kamailios(next_hop, record_route=True)``."""
    started: list[KamailioProxy] = []

    def make(next_hop, *, record_route: bool = True) -> KamailioProxy:
        kam = KamailioProxy(tmp_path / "kamailio", next_hop, record_route=record_route)
        started.append(kam)
        return kam.start()

    yield make
    for kam in started:
        kam.stop()
