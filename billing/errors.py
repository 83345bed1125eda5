"""``LedgerError``: why a billing operation cannot be done, as one line and an HTTP status.

One error type for every layer (money parsing, the ledger store, the money
commands, the admin RPC) so that the CLI prints it as it is and the REST API
answers with its ``status`` -- without translating between error types.
"""
from __future__ import annotations

__all__ = ["LedgerError"]


class LedgerError(ValueError):
    """A money operation that cannot be done, worded as one line.  ``status`` is
    the HTTP status an API answers with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status
