"""sipsak 0.9.8 (Debian `sipsak`) in the interop tests: one request, its final answer.

    res = send(request_text("OPTIONS", "sip:127.0.0.1:5070", ...), ("127.0.0.1", 5070))
    res.status      # 200

Every request is written to a file and sent with ``sipsak -f FILE``: sipsak
adds its Via, retransmits (T1 500 ms), answers a 401/407 with digest
credentials when ``-u``/``-a`` are given, and prints what it received.

Why a file instead of sipsak's own modes (``-U`` register, ``-M`` message):
sipsak 0.9.8.1 cuts a five-digit port in the URI it builds
(``-s sip:127.0.0.1:45678`` sends ``OPTIONS sip:127.0.0.1:4567``) and
resolves the URI's domain itself (``example.test`` is unresolvable here); the
target is therefore given as ``-s sip:HOST -r PORT`` and the Request-URI is
written in the file.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

SIPSAK = os.environ.get("SIPSAK_BIN") or shutil.which("sipsak") or "/usr/bin/sipsak"

_STATUS = re.compile(r"^SIP/2\.0 (\d{3})\b", re.M)


@dataclass
class SipsakResult:
    returncode: int | None
    output: str
    cmd: list[str]

    @property
    def statuses(self) -> list[int]:
        """Every status line sipsak printed, in order."""
        return [int(code) for code in _STATUS.findall(self.output)]

    @property
    def status(self) -> int | None:
        """The final answer (the last status line), None if nothing came back."""
        return self.statuses[-1] if self.statuses else None

    @property
    def challenged(self) -> bool:
        """sipsak answered a 401/407 with credentials (it prints "authorizing";
        the challenge itself is not printed at -vv)."""
        return "authorizing" in self.output

    def describe(self) -> str:
        return f"cmd: {' '.join(self.cmd)}\nrc: {self.returncode}\n{self.output[-4000:]}"


def request_text(method: str, uri: str, from_uri: str, to_uri: str, *,
                 headers: dict[str, str] | None = None, body: str = "",
                 content_type: str = "text/plain") -> str:
    """A request without Via (sipsak adds its own), CRLF line ends."""
    lines = [f"{method} {uri} SIP/2.0",
             f"From: <{from_uri}>;tag={uuid.uuid4().hex[:10]}",
             f"To: <{to_uri}>",
             f"Call-ID: {uuid.uuid4().hex}@127.0.0.1",
             f"CSeq: 1 {method}",
             "Max-Forwards: 70",
             "User-Agent: sipsak (sipledger interop)"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


def send(text: str, dest: tuple[str, int], workdir: str | os.PathLike, *,
         user: str | None = None, password: str | None = None,
         timeout: float = 15.0) -> SipsakResult:
    """Send ``text`` to ``dest`` and wait for sipsak to finish (bounded)."""
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    path = wd / f"sipsak-{uuid.uuid4().hex[:8]}.sip"
    path.write_bytes(text.encode())
    cmd = [SIPSAK, "-vv", "-L", "-f", str(path), "-s", f"sip:{dest[0]}", "-r", str(dest[1])]
    if user is not None:
        cmd += ["-u", user]
    if password is not None:
        cmd += ["-a", password]
    try:
        res = subprocess.run(cmd, cwd=wd, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as exc:     # subprocess.run kills it (by its PID)
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return SipsakResult(None, out, cmd)
    return SipsakResult(res.returncode, res.stdout + res.stderr, cmd)
