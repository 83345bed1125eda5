"""Account commands for another billing instance's accounts, relayed through the shared database.

With several billing instances (``[billing] partitioned``, docs/billing-scale-out.md)
the CLI and the API reach the instance on their own host; a command for an
account another instance owns (``ACCOUNT_OPS``) must run on the owner, against
its live state.  ``CommandRelay.forward`` puts the request line in the
``billing_command`` table (with the account's partition) and waits for the
answer; ``CommandRelay.run`` (every instance) picks up the commands of the
partitions it owns, runs them through the money commands of
billing/application.py and stores the answers.  The database is the only
channel, so it works across hosts with nothing more to secure, and money
stays exactly once: a top-up's ledger event id is the hash of its
idempotency key, checked in the shared ledger by whichever instance owns the
account, however often the command is run.

Bounded: the asking side waits ``FORWARD_TIMEOUT_S`` (under the client's
10 s), the owner looks every ``COMMAND_POLL_S`` at most ``BATCH`` commands,
and rows nobody reads any more are deleted after ``COMMAND_TTL_MS``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter

import msgspec

from billing import rpc
from billing.application import BillingApplication
from billing.errors import LedgerError
from billing.ledger.owners import Ownership
from billing.ledger.store import LedgerStore
from proxy.infra.clock import now_ms

__all__ = ["ACCOUNT_OPS", "CommandRelay"]

log = logging.getLogger("sipledger.billing")

ACCOUNT_OPS = ("balance", "account.put", "account.delete", "money")   # run by the account's owner
FORWARD_TIMEOUT_S = 8.0         # a command for another instance's account waits this long (client: 10 s)
COMMAND_POLL_S = 0.05           # how often both sides look at the table
COMMAND_TTL_MS = 3600_000       # unanswered / unread commands are deleted after this
BATCH = 50                      # commands an owner takes per look


class CommandRelay:
    def __init__(self, own: Ownership, store: LedgerStore, app: BillingApplication, stats: Counter):
        self.own, self.store, self.app, self.stats = own, store, app, stats

    def relays(self, request: rpc.RpcRequest) -> bool:
        """Whether ``request`` belongs to another instance."""
        return request.op in ACCOUNT_OPS and not self.own.owns(request.account)

    async def forward(self, request: rpc.RpcRequest) -> rpc.RpcResponse:
        """Run ``request`` on its account's owner; its answer (504 when none came in time)."""
        store = self.store
        command_id = uuid.uuid4().hex
        await asyncio.to_thread(store.command_put, command_id, self.own.part(request.account), rpc.encode(request),
                                now_ms())
        self.stats["rpc_forwarded"] += 1
        deadline = time.monotonic() + FORWARD_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                answer = await asyncio.to_thread(store.command_response, command_id)
                if answer is not None:
                    return rpc.decode_response(answer)
                await asyncio.sleep(COMMAND_POLL_S)
        finally:
            with contextlib.suppress(LedgerError):
                await asyncio.to_thread(store.command_delete, command_id)
        return rpc.RpcResponse(ok=False, status=504, error="the billing instance owning this account did not "
                               "answer in time; retry with the same idempotency key")

    async def run(self) -> None:
        """Commands other instances received for our accounts: run them, store the answers."""
        own, store = self.own, self.store
        expired = 0.0
        while True:
            await asyncio.sleep(COMMAND_POLL_S)
            try:
                if time.monotonic() - expired > 60:
                    expired = time.monotonic()
                    await asyncio.to_thread(store.commands_expire, now_ms() - COMMAND_TTL_MS)
                if not own.ready:
                    continue
                for command_id, line in await asyncio.to_thread(store.commands_for, set(own.ready), BATCH):
                    response = await self._run_one(line)
                    if response is not None:
                        await asyncio.to_thread(store.command_answer, command_id, rpc.encode(response))
                        self.stats["rpc_for_others"] += 1
            except LedgerError as exc:
                log.warning("billing: commands for our accounts: %s", exc)

    async def _run_one(self, line: bytes) -> rpc.RpcResponse | None:
        try:
            request = rpc.decode_request(line)
            if not self.own.owns(request.account):
                return None                     # handed over meanwhile: the new owner runs it
            return rpc.RpcResponse(ok=True, result=await self.app.execute(request))
        except LedgerError as exc:
            return rpc.RpcResponse(ok=False, status=exc.status, error=str(exc))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return rpc.RpcResponse(ok=False, status=400, error=f"bad request: {exc}")
        except Exception as exc:                # noqa: BLE001 - answered, not fatal
            log.exception("billing: relayed command failed")
            return rpc.RpcResponse(ok=False, status=500, error=f"billing service error: {exc!r}")
