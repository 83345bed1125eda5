"""Shared set-up of the SIPp end-to-end tests: a provisioned `sipledger up`,
REGISTER for the duration of a block, and SIPp outcome checks."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from tests.harness.proxy import SipledgerProcess
from tests.harness.sipp import SippResult, SippUAS, free_udp_port, register

DOMAIN = "example.test"
PASSWORDS = {"alice": "a1ice-pw", "bob": "s3cret", "carol": "c4rol-pw", "dave": "d4ve-pw"}
MAIN_MAX_DIALOG = 3600
SHORT_MAX_DIALOG = 4          # the dialog-timeout tests' `up` (tests/e2e/conftest.py)

# SIPp 3.6.1 answers only MD5 (or AKAv1-MD5) challenges and uses the first
# WWW-/Proxy-Authenticate header it finds: a SHA-256 challenge listed first
# makes it abort ("createAuthHeader: authentication must use MD5 ..."), so
# the proxy under test offers MD5 only.  Workers look for provisioning and
# routing changes every 0.25 s: tests wait for them (``wait_until_loaded``).
BASE_CONFIG = """\
[proxy]
workers = {workers}
max_dialog_seconds = {max_dialog}
{proxy_extra}
[auth]
algorithms = ["MD5"]
[provisioning]
reload_seconds = 0.25
"""


def start_sipledger(data_dir: Path, max_dialog: int = MAIN_MAX_DIALOG,
                    extra_config: str = "", workers: int = 1, proxy_extra: str = "") -> SipledgerProcess:
    """Provision example.test with alice, bob, carol and dave and start `up`."""
    port = free_udp_port()
    sl = SipledgerProcess(data_dir, port,
                          config_text=BASE_CONFIG.format(max_dialog=max_dialog, workers=workers,
                                                            proxy_extra=proxy_extra) + extra_config)
    try:
        sl.domain_add(DOMAIN)
        for user, pw in PASSWORDS.items():
            sl.user_add(f"{user}@{DOMAIN}", pw)
        sl.start(timeout=60)
    except BaseException:
        sl.stop()
        raise
    return sl


@contextlib.contextmanager
def registered(sl: SipledgerProcess, user: str, uas: SippUAS, workdir: Path, expires: int = 300):
    """REGISTER user -> the UAS's ip:port for the duration of the block, then
    un-REGISTER (Expires: 0) so the next test starts with no binding."""
    res = register(sl.sip_addr, user, DOMAIN, PASSWORDS[user], uas.contact_host, expires,
                   workdir=workdir)
    assert res.ok, "REGISTER failed\n" + res.describe()
    try:
        yield res
    finally:
        unreg = register(sl.sip_addr, user, DOMAIN, PASSWORDS[user], uas.contact_host, 0,
                         workdir=workdir)
        if sys.exc_info()[0] is None:           # don't hide the test's own failure
            assert unreg.ok, "un-REGISTER (Expires: 0) failed\n" + unreg.describe()


def refused_call(sl: SipledgerProcess, caller: str, callee: SippUAS, workdir: Path, expected: int) -> SippResult:
    """``caller`` calls bob (registered on ``callee`` meanwhile) and must get the final
    ``expected``; returns the caller's SIPp result."""
    from tests.harness.sipp import run_uac
    with registered(sl, "bob", callee, workdir):
        res = run_uac("uac_call_expect_failure", sl.sip_addr,
                      {"caller": caller, "callee": "bob", "domain": DOMAIN}, 15,
                      auth=(caller, PASSWORDS[caller]), auth_uri=f"bob@{DOMAIN}", workdir=workdir,
                      variables={"expected": expected})
        assert res.returncode == 0 and res.successful == 1, res.describe()
    return res


def assert_completed(res: SippResult, what: str) -> None:
    assert res.returncode == 0 and res.successful == 1 and res.failed == 0, \
        f"{what}: SIPp scenario did not complete\n{res.describe()}"


def assert_uas_completed(uas, what: str, timeout: float = 10) -> SippResult:
    rc = uas.wait(timeout)
    res = uas.result()
    assert rc == 0 and res.successful == 1 and res.failed == 0, \
        f"{what}: callee scenario did not complete (rc={rc})\n{res.describe()}"
    return res


def send_command(bootstrap: str, command) -> None:
    """Produce a call.control command (proxy/contract/commands.py), as billing would."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from proxy.contract import commands
    from proxy.infra.config import KafkaSettings
    from proxy.infra.kafka import producer_kwargs

    async def go():
        producer = AIOKafkaProducer(**producer_kwargs(KafkaSettings(bootstrap_servers=bootstrap)))
        await producer.start()
        try:
            await producer.send_and_wait("call.control", commands.encode(command),
                                         key=command.call_id.encode())
        finally:
            await producer.stop()
    asyncio.run(go())
