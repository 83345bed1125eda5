"""The money ledger: immutable money events, their fold, and where they are kept.

* ``accounts``   -- billing accounts (prepaid / postpaid) and their validation; pure;
* ``events``     -- which events exist: ids of their causes, validated money events, problems; pure;
* ``fold``       -- an account's balance and reservations as the fold of its events; pure;
* ``store``      -- the SQL ledger, the source of truth (and its one-writer lock);
* ``writer``     -- the billing service's writer thread (group commit);
* ``clickhouse`` -- the ClickHouse copy: sink from ``ledger.events``, repair from SQL, queries;
* ``check``      -- ``ledger check``: Σ debits = Σ rated CDR costs.

The events' wire form (``LedgerEvent``, on ``ledger.events``) is the contract's: proxy/contract/ledger.py.
"""
