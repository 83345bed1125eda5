"""Port ranges under pytest-xdist.

`./quickstart.sh test` runs the suite in two pytest-xdist processes.  Servers
the tests start pick ports at random and check them free, but a port checked
free in one process may be taken by the other before its server binds it
(rtpengine binds its media ports only when a call comes).  So each process
draws from its own slice of every range.
"""
from __future__ import annotations

import os


def worker_slice(ports: range) -> range:
    """This xdist process's share of ``ports`` (all of it outside xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not name.startswith("gw"):
        return ports
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    width = len(ports) // count
    first = ports.start + int(name[2:]) * width
    return range(first, first + width)
