"""Fixtures of the NAT suite (docs/nat-tests.md): one NAT topology and one
`sipledger up` for the whole folder, and three real phones, each in a home of
its own behind its own NAT: alice (the caller) in home 1, bob and carol (who
answer by themselves) in homes 2 and 3, reused by every test.

Each test that kills a callee's home kills a different callee: a killed phone
stays registered until the keep-alives give up on it, and a call to its AOR
meanwhile would also ring the dead contact (a second leg).  A phone asked for
after its home was killed is started again (home revived) all the same.

The folder's wall-time budget is about a minute: `up` starts once (~13 s),
its media and keep-alive timers are a few seconds (``MEDIA`` / ``NAT``),
and the phones stay registered between tests.

Only a machine that forbids network namespaces (not root, `ip netns add`
refused) skips the folder; a missing baresip, rtpengine or iptables fails it
(`./quickstart.sh test` installs them)."""
from __future__ import annotations

import shutil

import pytest

from proxy.core.location import LocationStore
from proxy.infra import clock
from tests.harness import netns
from tests.harness.baresip import Baresip, baresip_available
from tests.harness.calls import DOMAIN, PASSWORDS, start_sipledger
from tests.harness.rtpengine import _media_range, rtpengine_available

# Short timers, so a dead call ends within seconds (issue 14: "within the RTP
# timeout + 2 s").  The proxy polls rtpengine's per-stream counters every
# poll_seconds; NATed bindings are pinged every keepalive_seconds.
RTP_TIMEOUT_S = 3
MEDIA = """\
[media]
enabled = true
policy = "nat"
launch = true
interface = "{public_ip}"
port_min = {port_min}
port_max = {port_max}
rtp_timeout_seconds = {timeout}
one_way_timeout_seconds = {timeout}
poll_seconds = 0.5
timeout_seconds = 0.5
retries = 1
"""
KEEPALIVE_S = 1.0
KEEPALIVE_FAILURES = 2
NAT = f"""\
[nat]
keepalive_seconds = {KEEPALIVE_S}
keepalive_failures = {KEEPALIVE_FAILURES}
keepalive_method = "OPTIONS"
"""
# billing: 0.60/min in 1 s increments (0.01 a second), so a debit says how
# many seconds were charged
RATES = "plan,prefix,name,price_per_min,first_increment,next_increment,rounding,decimals,currency\n" \
        "retail,*,anywhere,0.60,1,1,up,4,EUR\n"
ALICE = f"alice@{DOMAIN}"

REQUIRED = {"baresip (Debian baresip-core)": baresip_available,
            "rtpengine (Debian rtpengine-daemon)": rtpengine_available,
            "iptables (Debian iptables)": lambda: shutil.which("iptables") is not None}


@pytest.fixture(scope="package")
def net():
    """The topology: three homes behind their NATs, the public bridge.  Removed
    when the folder ends, also after a failure or Ctrl-C."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    missing = [name for name, available in REQUIRED.items() if not available()]
    if missing:
        pytest.fail("not installed: " + ", ".join(missing) + " (./quickstart.sh test installs them)")
    with netns.NatTopology(homes=3) as topology:
        yield topology
    assert not topology.leftovers(), f"the NAT topology left {topology.leftovers()} behind"


@pytest.fixture(scope="package")
def sl(net, tmp_path_factory):
    """`sipledger up` on the public address with the relay launched by `up`,
    keep-alives, alice and bob, a rate plan for alice (postpaid), an admin client."""
    port_min, port_max = _media_range(40)
    config = MEDIA.format(public_ip=net.public_ip, port_min=port_min, port_max=port_max,
                          timeout=RTP_TIMEOUT_S) + NAT
    sl = start_sipledger(tmp_path_factory.mktemp("nat-sipledger") / "data",
                         proxy_extra=f'listen = "{net.public_ip}"', extra_config=config)
    try:
        rates = sl.data_dir / "rates.csv"
        rates.write_text(RATES)
        sl.run_cli("rates", "import", str(rates))
        sl.run_cli("rates", "assign", ALICE, "retail")
        sl.run_cli("account", "add", ALICE, "--postpaid", "--currency", "EUR", "--credit-limit", "100")
        sl.admin_client()
    except BaseException:
        sl.stop()
        raise
    yield sl
    sl.stop()


def bindings(sl, user: str) -> list:
    """``user``'s live bindings, as the location store holds them."""
    with LocationStore.in_data_dir(sl.data_dir) as location:
        return location.lookup(f"{user}@{DOMAIN}", clock.time())


class Phones:
    """alice, bob and carol in homes 1, 2 and 3 (bob and carol answer by
    themselves), started on demand and started again after a test killed one."""

    def __init__(self, net: netns.NatTopology, sl, workdir):
        self.net, self.sl, self.workdir = net, sl, workdir
        self._phones: dict[str, Baresip] = {}
        self._runs = 0

    USERS = ("alice", "bob", "carol")

    def home(self, user: str) -> netns.Home:
        return self.net.homes[self.USERS.index(user)]

    def get(self, user: str) -> Baresip:
        phone = self._phones.get(user)
        if phone is not None and phone.proc is not None and phone.proc.poll() is None:
            return phone
        home = self.home(user)
        self.net.restore(home)
        self.net.revive_home(home)
        self._runs += 1
        phone = Baresip(self.workdir / f"{user}-{self._runs}", user, DOMAIN, PASSWORDS[user], self.sl.sip_addr,
                        auto_answer=(user != "alice"), home=home)
        self._phones[user] = phone.start()
        phone.wait_registered()
        return phone

    def stop(self) -> None:
        for phone in self._phones.values():
            phone.stop()


@pytest.fixture(scope="package")
def phone_pool(net, sl, tmp_path_factory):
    pool = Phones(net, sl, tmp_path_factory.mktemp("nat-phones"))
    yield pool
    pool.stop()


@pytest.fixture
def alice(phone_pool) -> Baresip:
    return phone_pool.get("alice")


@pytest.fixture
def bob(phone_pool) -> Baresip:
    return phone_pool.get("bob")
