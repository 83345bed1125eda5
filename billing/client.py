"""How the CLI and the API process run the money commands: through the billing service, or without it.

The billing service is the ledger's one writer.  ``BillingClient.request``
sends an ``RpcRequest`` over its unix socket (DATA_DIR/run/billing.sock,
billing/rpc.py) and returns the result; the service runs it with the money
commands of billing/application.py against its live state and answers once
the ledger has it.  When no service runs (its lock, DATA_DIR/run/billing.lock,
is free) the client takes the lock itself and runs the *same* commands on the
SQL ledger (``StoredLedger``); the service folds that in at its next start.

Results are JSON-ready dicts, the same shape either way (``live`` says which
side answered); errors are ``LedgerError`` with an HTTP-like ``status``.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from proxy.infra.config import BILLING_SOCKET_FILE, RUN_DIR, BillingSettings

from . import rpc
from .application import BillingApplication, StoredLedger
from .errors import LedgerError
from .ledger.store import LedgerStore, ServiceLock, ServiceRunning
from .rating.store import RatesStore
from .rpc import RpcRequest

__all__ = ["BillingClient", "RERATE_TIMEOUT_S"]

RERATE_TIMEOUT_S = 600.0            # a rerate prices a whole period: minutes for millions of calls


class BillingClient:
    def __init__(self, data_dir: str | os.PathLike, settings: BillingSettings = BillingSettings(), *,
                 timeout: float = 10.0):
        self.data_dir = Path(data_dir)
        self.settings = settings
        self.timeout = timeout
        self.socket_path = self.data_dir / RUN_DIR / BILLING_SOCKET_FILE

    # -- the calls ----------------------------------------------------------------------------
    def balance(self, account: str) -> dict:
        return self.request(RpcRequest(op="balance", account=account))

    def put_account(self, account: str, fields: dict, *, create: bool) -> dict:
        return self.request(RpcRequest(op="account.put", account=account, fields=fields, create=create))

    def delete_account(self, account: str) -> dict:
        return self.request(RpcRequest(op="account.delete", account=account))

    def money(self, account: str, kind: str, amount: str, key: str, note: str = "", *,
              cdr_id: str = "", leg: int = -1) -> dict:
        return self.request(RpcRequest(op="money", account=account, kind=kind, amount=str(amount),
                                       key=key, note=note, cdr_id=cdr_id, leg=leg))

    def rerate(self, from_ms: int, to_ms: int, *, account: str = "", plan: str = "", dry_run: bool = False,
               who: str = "") -> dict:
        """A rerate run (billing/application.py ``rerate``); its result, the run's record."""
        return self.request(RpcRequest(op="rerate", from_ms=from_ms, to_ms=to_ms, account=account, plan=plan,
                                       dry_run=dry_run, who=who), timeout=max(self.timeout, RERATE_TIMEOUT_S))

    def service_running(self) -> bool:
        return ServiceLock(self.data_dir).held_elsewhere()

    # -- transport ----------------------------------------------------------------------------
    def request(self, req: RpcRequest, *, timeout: float | None = None) -> dict:
        """The result of ``req`` (raises LedgerError with an HTTP-like ``status``)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                return self._remote(req, deadline)
            except (FileNotFoundError, ConnectionRefusedError):
                pass                              # no service listening
            try:
                with ServiceLock(self.data_dir):
                    return self._direct(req)
            except ServiceRunning:
                # the service is starting (lock taken, socket not there yet) or stopping
                if time.monotonic() >= deadline:
                    raise LedgerError("the billing service holds the ledger but does not answer "
                                      f"on {self.socket_path}", status=503) from None
                time.sleep(0.1)

    def _remote(self, req: RpcRequest, deadline: float) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(str(self.socket_path))
            sock.sendall(rpc.encode(req))
            data = b""
            try:
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except socket.timeout:
                raise LedgerError("the billing service did not answer in time; retry with the "
                                  "same idempotency key", status=504) from None
        if not data:
            raise LedgerError("the billing service closed the connection; retry with the same "
                              "idempotency key", status=503)
        response = rpc.decode_response(data)
        if not response.ok:
            raise LedgerError(response.error, status=response.status)
        return response.result

    def _direct(self, req: RpcRequest) -> dict:
        """No service: the same command on the SQL ledger (the caller holds its lock)."""
        url = self.settings.database_url(self.data_dir)
        with LedgerStore(url) as store, RatesStore(url) as rates:
            store.create_schema()
            rates.create_schema()
            if self.settings.partitioned and req.op in ("money", "rerate") and store.owned_partitions():
                # the ledger's writers are the instances owning its partitions (maybe on other hosts)
                raise LedgerError("billing instances own this ledger ([billing] partitioned): send money "
                                  "commands through one of them", status=503)
            app = BillingApplication(StoredLedger(store, rates), default_currency=self.settings.currency,
                                     default_plan=self.settings.default_plan)
            return asyncio.run(app.execute(req))
