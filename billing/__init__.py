"""Billing: rating (pure, ``billing.rating``), the rate store, and later the ledger,
credit control and reports."""
