"""OPTIONS pings (gateway probing, OpenSIPS dr_probing; NAT keep-alives,
natping.py): one request, one callback."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sip.build import new_tag
from ..sip.message import SipMessage
from ..transactions import NonInviteClientTransaction, client_key, new_branch
from .ports import Target
from .resolver import Pending
from .txdriver import TxDriver

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Core


def send_options(core: "Core", uri: str, on_result: Callable[[int | None], None],
                 destination: Target | None = None, call_id: str | None = None) -> bool:
    """OPTIONS to ``uri``; on_result(status) on the final response, None on timeout
    or transport failure.  False when the URI cannot be resolved (at once, or once
    DNS has answered: then on_result(None)).  ``destination``: send there instead
    of resolving ``uri`` (a NATed phone: its Contact in the Request-URI, the
    packet to its pinhole; ``call_id``: one this worker owns, see natping.py)."""
    if destination is not None:
        _send(core, uri, destination, on_result, call_id)
        return True
    hop = core.resolve(uri)
    if hop is None:
        return False
    if isinstance(hop, Pending):
        core.when_resolved(uri, lambda target: _send(core, uri, target, on_result)
                           if target is not None else on_result(None))
    else:
        _send(core, uri, hop, on_result)
    return True


def _send(core: "Core", uri: str, target: Target, on_result: Callable[[int | None], None],
          call_id: str | None = None) -> None:
    branch = new_branch()
    request = SipMessage.request("OPTIONS", uri)
    request.add("via", core.node.via(target.transport, branch))
    request.add("max-forwards", "70")
    request.add("from", f"<sip:ping@{core.node.host}>;tag={new_tag()}")
    request.add("to", f"<{uri}>")
    request.add("call-id", call_id or f"{new_tag()}{new_tag()}@{core.node.host}")
    request.add("cseq", "1 OPTIONS")
    request.add("user-agent", core.user_agent)
    machine = NonInviteClientTransaction(request, reliable=target.transport != "udp",
                                         timers=core.timers)
    done: list[int | None] = []

    def finish(status: int | None) -> None:
        if not done:
            done.append(status)
            on_result(status)

    driver = TxDriver(machine, target, core.effects, client_key(request), core.client_txs,
                      on_message=lambda resp: finish(resp.status) if (resp.status or 0) >= 200 else None,
                      on_timeout=lambda: finish(None))
    driver.run(machine.start())
