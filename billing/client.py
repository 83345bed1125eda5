"""How the CLI and the API process change accounts and money: through the billing service.

The billing service is the ledger's one writer.  ``BillingClient.request``
sends an ``RpcRequest`` over its unix socket (DATA_DIR/run/billing.sock) and
returns the result; the service applies it to its live state and the durable
ledger before it answers.  When no service runs (its lock,
DATA_DIR/run/billing.lock, is free) the client takes the lock itself and does
the same work on the SQLite ledger directly, so ``sipledger account topup``
works before ``sipledger up`` too; the service folds it in at its next start.

Exactly once: a top-up / adjustment / refund's event id is a hash of
(kind, account, idempotency key).  Sending the same request again -- a retry
after a timeout, a second click -- finds the event already there and answers
with it (``replayed: true``); the same key with another amount is refused (409).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import msgspec

from proxy.infra.config import BILLING_SOCKET_FILE, RUN_DIR, BillingSettings

from .ledger.fold import (
    ZERO,
    AccountInfo,
    LedgerError,
    account_dict,
    build_account,
    event_dict,
    fold,
    money_event,
    money_text,
    parse_amount,
    same_request,
)
from .ledger.store import LedgerStore, ServiceLock, ServiceRunning
from .rpc import RpcRequest, RpcResponse

__all__ = ["BillingClient", "offline_snapshot"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RpcResponse)


def offline_snapshot(store: LedgerStore, info: AccountInfo) -> dict:
    """The account's money folded from the durable ledger (no live holds)."""
    state = fold(store.iter_events(account=info.id))
    book = state.books.get(info.id)
    balance = book.balance if book else ZERO
    reserved = book.reserved if book else ZERO
    open_calls = state.open_calls()
    return {
        "account": info.id, "currency": info.currency, "kind": info.kind, "status": info.status,
        "credit_limit": money_text(info.credit_limit), "balance": money_text(balance),
        "reserved": money_text(reserved), "held": "0",
        "available": money_text(balance - info.floor - reserved),
        "active_calls": [{"call_id": cid, "answer_ms": c.answer_ms, "paid_ms": c.paid_ms,
                          "reserved": money_text(c.reserved), "exhausted": False, "number": c.number}
                         for cid, c in sorted(open_calls.items())],
        "live": False,
    }


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

    def service_running(self) -> bool:
        return ServiceLock(self.data_dir).held_elsewhere()

    # -- transport ----------------------------------------------------------------------------
    def request(self, req: RpcRequest) -> dict:
        """The result of ``req`` (raises LedgerError with an HTTP-like ``status``)."""
        deadline = time.monotonic() + self.timeout
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
            sock.sendall(_encoder.encode(req) + b"\n")
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
        response = _decoder.decode(data)
        if not response.ok:
            raise LedgerError(response.error, status=response.status)
        return response.result

    # -- no service: the same operations on the ledger directly, under its lock --------------------
    def _store(self) -> LedgerStore:
        store = LedgerStore(self.settings.database_url(self.data_dir))
        store.create_schema()
        return store

    def _direct(self, req: RpcRequest) -> dict:
        now = time.time_ns() // 1_000_000
        with self._store() as store:
            if req.op == "ping":
                return {"live": False}
            existing = store.get_account(req.account) if req.account else None
            if req.op == "balance":
                if existing is None:
                    raise LedgerError(f"account {req.account} does not exist", status=404)
                return offline_snapshot(store, existing)
            if req.op == "account.put":
                info = build_account(req.account, req.fields, existing=existing, now_ms=now,
                                     default_currency=self.settings.currency)
                store.put_account(info, create=req.create)
                return account_dict(info)
            if req.op == "account.delete":
                store.delete_account(req.account)
                return {"deleted": req.account}
            if req.op == "money":
                if existing is None:
                    raise LedgerError(f"account {req.account} does not exist", status=404)
                balance = fold(store.iter_events(account=existing.id)).books
                current = balance[existing.id].balance if existing.id in balance else ZERO
                event = money_event(existing, req.kind, parse_amount(req.amount), req.key, ts_ms=now,
                                    note=req.note, cdr_id=req.cdr_id, leg=req.leg)
                stored = store.get_event(event.id)
                replayed = stored is not None
                if stored is None:
                    money_event(existing, req.kind, event.amount, req.key, ts_ms=now, note=req.note,
                                balance=current)          # the floor check
                    stored = store.append([event])[0]
                if not same_request(stored, event):
                    raise LedgerError(f"idempotency key {req.key!r} was used for a different request "
                                      f"({stored.kind} {stored.amount})", status=409)
                result = offline_snapshot(store, existing)
                result.update(event=event_dict(stored), replayed=replayed)
                return result
        raise LedgerError(f"unknown operation {req.op!r}", status=400)
