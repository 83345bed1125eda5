"""Two test processes (pytest-xdist) without two tests meeting.

`./quickstart.sh test` runs the suite in two pytest-xdist processes.

Which tests run together: each test file stays in one process (its
module-scoped fixtures start once), and so does each folder whose tests share
one package-scoped `up` or namespace topology (``WHOLE_FOLDER``).  That is a
scheduler (``FolderOrFileScheduling``), not ``xdist_group`` marks: xdist 3.8
puts the group into ``item._nodeid``, which pytest 9.2 no longer reads, so the
marks silently stopped grouping.

Ports: servers the tests start pick ports at random and check them free, but
a port checked free in one process may be taken by the other before its
server binds it (rtpengine binds its media ports only when a call comes).  So
each process draws from its own slice of every range (``worker_slice``).
"""
from __future__ import annotations

import os

from xdist.scheduler import LoadScopeScheduling

# Folders (under tests/) whose tests share one package-scoped fixture.
WHOLE_FOLDER = ("e2e", "nat", "interop", "panel")


def scope_of(nodeid: str) -> str:
    """The unit one process runs: a whole folder of ``WHOLE_FOLDER``, else the file."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    if len(parts) > 2 and parts[1] in WHOLE_FOLDER:
        return "/".join(parts[:2])
    return path


class FolderOrFileScheduling(LoadScopeScheduling):
    """xdist's scope scheduler with ``scope_of`` as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)


def worker_slice(ports: range) -> range:
    """This xdist process's share of ``ports`` (all of it outside xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not name.startswith("gw"):
        return ports
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    width = len(ports) // count
    first = ports.start + int(name[2:]) * width
    return range(first, first + width)
