"""Phones behind NAT on one machine: network namespaces, veth pairs and
iptables MASQUERADE, built and removed by the tests (root only).

    with NatTopology(homes=2) as net:
        net.public_ip                     # the proxy binds this ([proxy] listen)
        home = net.homes[0]               # home.ip 192.168.101.2, behind home.nat_ip
        proc = home.spawn(["baresip", ...])
        sock = socket_in(home.ns, socket.AF_INET, socket.SOCK_DGRAM)
        home.rtp_counts()                 # RTP packets into / out of the home
        net.cut_mapping(home); net.restore(home)
        net.kill_home(home); net.revive_home(home)

The topology (N = 1, 2; the public block is a free /28 of 203.0.113.0/24;
XXXX stands for the PID and a letter, see below)::

    root namespace (the "public internet": sipledger up, rtpengine, the test)
      bridge slnXXXXbr 203.0.113.B+1/28  <- [proxy] listen, [media] interface
        |  port slnXXXXpN                  (no IP forwarding in the root namespace)
    namespace slnXXXXnN  ("NAT N")
      slnXXXXnNo 203.0.113.B+1+N/28  (outside, default route to the bridge)
      slnXXXXnNi 192.168.10N.1/24    (inside)
      ip_forward = 1, nat POSTROUTING -o outside -j MASQUERADE
      filter FORWARD -> chain SLCUT (drop rules while a cut is on)
                     -> chain SLRTP (counts RTP to and from the phone)
        |
    namespace slnXXXXhN  ("home N")
      slnXXXXhNi 192.168.10N.2/24 (default route to the NAT), lo up
      the phone: SIP on 5060, RTP on RTP_PORTS, control on 127.0.0.1

Why the public side is the root namespace, not a namespace of its own:
``sipledger up`` then runs exactly as in every other end-to-end test (its API,
its embedded broker and the CLI on 127.0.0.1, its data dir, the
``SipledgerProcess`` harness unchanged) and only its SIP socket and
rtpengine's media address move to the bridge address.  A public namespace
would have to run `up`, rtpengine and every CLI call through ``ip netns
exec`` and would hide the API from the test.  The root namespace only gains
one bridge with a documentation address (RFC 5737) and the bridge ends of
the veths: removing the bridge and the namespaces removes all of it, and no
rule is added to the root namespace's firewall.  The proxy sees the NATs'
outside addresses as public and the phones' 192.168.x addresses (RFC 1918)
as private, which is what its NAT detection keys on.

No ``conntrack`` tool is installed here, so a NAT mapping is "removed" by a
DROP rule in the NAT namespace for everything the outside sends in towards
the home: the effect the proxy sees (its packets to the pinhole vanish) is
the one of an expired mapping.  ``restore`` flushes the rules again.

Names carry the creating PID (base 36, 4 characters) and a letter per
topology of that process (interface names stay under IFNAMSIZ, 15 bytes): ``sweep_stale()`` removes what a killed earlier run
left (its PID is gone), never what a live run owns.  Everything is removed in
``__exit__``, also after a failure or Ctrl-C; deleting a namespace deletes
its interfaces, rules and the veth peers in the root namespace.
"""
from __future__ import annotations

import ctypes
import ipaddress
import itertools
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

PREFIX = "sln"                     # every namespace and link this harness makes
PUBLIC_NET = ipaddress.ip_network("203.0.113.0/24")    # RFC 5737 TEST-NET-3
BLOCK = 28                         # one /28 of it per run
SIP_PORT = 5060                    # the phone's SIP port in its home (every port is free there)
RTP_PORTS = (10000, 10019)         # the phone's RTP/RTCP ports in its home
CTRL_PORT = 4444                   # the phone's control port, 127.0.0.1 of its home

_CLONE_NEWNET = 0x40000000
_instances = itertools.count()     # topologies of this process: a letter each in the names
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class NetnsError(RuntimeError):
    pass


def _pid36(pid: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(4):
        pid, r = divmod(pid, 36)
        out = digits[r] + out
    return out


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """One command (``ip``, ``iptables``); its stderr in the error when it fails."""
    res = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` exited {res.returncode}: {res.stderr.strip()}")
    return res


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside namespace ``ns`` (``ip netns exec`` execs it: same PID)."""
    return ["ip", "netns", "exec", ns, *argv]


def run_in(ns: str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return run(in_ns(ns, argv), **kw)


def popen_in(ns: str, argv: Sequence[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(in_ns(ns, argv), **kw)


def call_in(ns: str, fn: Callable[[], T]) -> T:
    """``fn()`` run on a thread that entered namespace ``ns``: a socket made
    there stays in ``ns`` for good, and the calling thread never moves
    (network namespaces are per thread)."""
    result: list = []

    def body() -> None:
        try:
            with open(f"/run/netns/{ns}") as handle:
                if _libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    raise NetnsError(f"setns({ns}): {os.strerror(ctypes.get_errno())}")
            result.append((True, fn()))
        except BaseException as exc:          # handed to the caller's thread
            result.append((False, exc))

    worker = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    worker.start()
    worker.join(30)
    if not result:
        raise NetnsError(f"nothing came back from namespace {ns}")
    ok, value = result[0]
    if not ok:
        raise value
    return value


def socket_in(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket that lives in namespace ``ns`` (usable from any thread)."""
    return call_in(ns, lambda: socket.socket(family, kind))


def unavailable() -> str | None:
    """Why this machine cannot build the topology, or None.  Only a missing
    privilege or a kernel that refuses namespaces is a reason to skip."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the NAT tests as root"
    for tool in ("ip", "iptables"):
        if run(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
            return None   # a missing tool is a failure (./quickstart.sh installs it), not a skip
    probe = f"{PREFIX}{_pid36(os.getpid())}probe"
    res = run(["ip", "netns", "add", probe], check=False)
    if res.returncode != 0:
        return f"this machine refuses network namespaces: `ip netns add` said {res.stderr.strip()!r}"
    run(["ip", "netns", "del", probe], check=False)
    return None


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _owner(name: str) -> int | None:
    """The PID encoded in one of our names, None if it is not ours."""
    m = re.fullmatch(rf"{PREFIX}([0-9a-z]{{4}})\w*", name)
    return int(m.group(1), 36) if m else None


def sweep_stale() -> list[str]:
    """Remove the namespaces and root links earlier runs left behind (their
    creating PID is gone); what a live process owns is left alone."""
    removed = []
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = _owner(name)
        if pid is not None and not _pid_alive(pid):
            run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        m = re.match(r"\d+:\s+([^:@\s]+)", line)
        pid = _owner(m.group(1)) if m else None
        if m and pid is not None and not _pid_alive(pid):
            run(["ip", "link", "del", m.group(1)], check=False)
            removed.append(m.group(1))
    return removed


def _used_public_addresses() -> set[ipaddress.IPv4Address]:
    out = run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    return {ipaddress.ip_address(a) for a in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
            if ipaddress.ip_address(a) in PUBLIC_NET}


def _free_block() -> ipaddress.IPv4Network:
    """A /28 of 203.0.113.0/24 that no address of this machine is in (two runs
    at once take different blocks)."""
    used = _used_public_addresses()
    blocks = list(PUBLIC_NET.subnets(new_prefix=BLOCK))
    start = os.getpid() % len(blocks)
    for i in range(len(blocks)):
        block = blocks[(start + i) % len(blocks)]
        if not any(a in block for a in used):
            return block
    raise NetnsError(f"no free /{BLOCK} left in {PUBLIC_NET}: addresses in use {sorted(used)}")


@dataclass
class Home:
    """One home network (namespace ``ns``) behind its NAT (namespace ``nat_ns``)."""
    index: int
    ns: str
    nat_ns: str
    ip: str                   # the phone's private address
    gateway: str              # the NAT's inside address
    nat_ip: str               # the NAT's outside (public) address: what the proxy sees
    inside_if: str            # in nat_ns, towards the home
    outside_if: str           # in nat_ns, towards the public bridge
    procs: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, argv: Sequence[str], **popen_kw) -> subprocess.Popen:
        """Start ``argv`` in this home; ``kill_home`` kills it without warning."""
        proc = popen_in(self.ns, argv, **popen_kw)
        self.procs.append(proc)
        return proc

    def nat(self, *args: str) -> subprocess.CompletedProcess:
        """``iptables ARGS`` in this home's NAT."""
        return run_in(self.nat_ns, ["iptables", "-w", "5", *args])

    def rtp_counts(self) -> tuple[int, int]:
        """(packets into the home, packets out of it) to/from the phone's RTP
        ports, as the NAT forwarded them since the topology was built."""
        out = self.nat("-L", "SLRTP", "-v", "-x", "-n").stdout.splitlines()
        rows = [line.split() for line in out[2:] if line.strip()]
        if len(rows) < 2:
            raise NetnsError(f"the RTP counters of {self.nat_ns} are missing: {out}")
        return int(rows[0][0]), int(rows[1][0])


class NatTopology:
    """``homes`` homes, each behind its own NAT, and a public bridge in the
    root namespace.  A context manager: ``__exit__`` removes everything."""

    def __init__(self, homes: int = 2):
        self.tag = f"{PREFIX}{_pid36(os.getpid())}{'abcdefghijklmnopqrstuvwxyz'[next(_instances) % 26]}"
        self.count = homes
        self.bridge = f"{self.tag}br"
        self.block: ipaddress.IPv4Network | None = None
        self.public_ip = ""
        self.homes: list[Home] = []
        self._made_ns: list[str] = []

    # -- build and remove --------------------------------------------------------
    def __enter__(self) -> "NatTopology":
        sweep_stale()
        self._remove()              # a previous topology of this very process
        try:
            self._build()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _build(self) -> None:
        self.block = _free_block()
        hosts = list(self.block.hosts())
        self.public_ip = str(hosts[0])
        prefix = self.block.prefixlen
        run(["ip", "link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        run(["ip", "addr", "add", f"{self.public_ip}/{prefix}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for n in range(1, self.count + 1):
            home = Home(index=n, ns=f"{self.tag}h{n}", nat_ns=f"{self.tag}n{n}",
                        ip=f"192.168.{100 + n}.2", gateway=f"192.168.{100 + n}.1", nat_ip=str(hosts[n]),
                        inside_if=f"{self.tag}n{n}i", outside_if=f"{self.tag}n{n}o")
            self._build_home(home, prefix)
            self.homes.append(home)

    def _netns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._made_ns.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _build_home(self, home: Home, prefix: int) -> None:
        self._netns(home.nat_ns)
        self._netns(home.ns)
        port = f"{self.tag}p{home.index}"
        phone_if = f"{self.tag}h{home.index}i"
        # NAT <-> public bridge
        run(["ip", "link", "add", port, "type", "veth", "peer", "name", home.outside_if, "netns", home.nat_ns])
        run(["ip", "link", "set", port, "master", self.bridge, "up"])
        run(["ip", "-n", home.nat_ns, "addr", "add", f"{home.nat_ip}/{prefix}", "dev", home.outside_if])
        run(["ip", "-n", home.nat_ns, "link", "set", home.outside_if, "up"])
        run(["ip", "-n", home.nat_ns, "route", "add", "default", "via", self.public_ip])
        # home <-> NAT
        run(["ip", "-n", home.nat_ns, "link", "add", home.inside_if, "type", "veth", "peer", "name", phone_if,
             "netns", home.ns])
        run(["ip", "-n", home.nat_ns, "addr", "add", f"{home.gateway}/24", "dev", home.inside_if])
        run(["ip", "-n", home.nat_ns, "link", "set", home.inside_if, "up"])
        run(["ip", "-n", home.ns, "addr", "add", f"{home.ip}/24", "dev", phone_if])
        run(["ip", "-n", home.ns, "link", "set", phone_if, "up"])
        run(["ip", "-n", home.ns, "route", "add", "default", "via", home.gateway])
        # the NAT itself, the cut switch and the RTP counters
        run_in(home.nat_ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        home.nat("-t", "nat", "-A", "POSTROUTING", "-o", home.outside_if, "-j", "MASQUERADE")
        home.nat("-N", "SLCUT")
        home.nat("-N", "SLRTP")
        home.nat("-A", "FORWARD", "-j", "SLCUT")
        home.nat("-A", "FORWARD", "-j", "SLRTP")
        ports = f"{RTP_PORTS[0]}:{RTP_PORTS[1]}"
        home.nat("-A", "SLRTP", "-o", home.inside_if, "-p", "udp", "--dport", ports)      # rule 1: into the home
        home.nat("-A", "SLRTP", "-i", home.inside_if, "-p", "udp", "--sport", ports)      # rule 2: out of it

    def _remove(self) -> None:
        """Kill what runs in the homes, delete the namespaces (their links and
        rules go with them) and the bridge.  Safe to call twice."""
        for home in self.homes:
            for proc in home.procs:
                _kill(proc)
        names = set(self._made_ns)
        for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
            if line.split() and line.split()[0].startswith(self.tag):
                names.add(line.split()[0])
        for name in sorted(names):
            run(["ip", "netns", "del", name], check=False)
        for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
            m = re.match(r"\d+:\s+([^:@\s]+)", line)
            if m and m.group(1).startswith(self.tag):
                run(["ip", "link", "del", m.group(1)], check=False)
        self._made_ns.clear()
        self.homes = []

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run still present (empty after ``__exit__``)."""
        found = [ln.split()[0] for ln in run(["ip", "netns", "list"], check=False).stdout.splitlines()
                 if ln.split() and ln.split()[0].startswith(self.tag)]
        for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
            m = re.match(r"\d+:\s+([^:@\s]+)", line)
            if m and m.group(1).startswith(self.tag):
                found.append(m.group(1))
        return found

    # -- what the tests do to a home ------------------------------------------------
    def cut_mapping(self, home: Home) -> None:
        """The NAT forgets the home's mappings: nothing from outside gets in."""
        home.nat("-A", "SLCUT", "-i", home.outside_if, "-o", home.inside_if, "-j", "DROP")

    def cut_media(self, home: Home) -> None:
        """The phone's RTP no longer leaves the home; its SIP still flows."""
        home.nat("-A", "SLCUT", "-i", home.inside_if, "-p", "udp", "--sport",
                 f"{RTP_PORTS[0]}:{RTP_PORTS[1]}", "-j", "DROP")

    def restore(self, home: Home) -> None:
        """Undo ``cut_mapping`` / ``cut_media``."""
        home.nat("-F", "SLCUT")

    def kill_home(self, home: Home) -> None:
        """The home vanishes at once: its processes die by SIGKILL (a phone sends
        no BYE, no un-REGISTER) and its link to the NAT goes down."""
        for proc in home.procs:
            _kill(proc)
        home.procs.clear()
        run(["ip", "-n", home.nat_ns, "link", "set", home.inside_if, "down"])

    def revive_home(self, home: Home) -> None:
        run(["ip", "-n", home.nat_ns, "link", "set", home.inside_if, "up"])


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
