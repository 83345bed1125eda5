"""Billing: rating, the money ledger, credit control and reports -- one sub-package per concept.

* ``rating/``   -- what a call costs: the pure rating model, rate plans in SQL, their CSV, ``sipledger rates``;
* ``ledger/``   -- the money: accounts, ledger events and their fold, the SQL ledger (source of truth),
  its writer thread, its ClickHouse copy, ``ledger check``;
* ``credit/``   -- live calls: the credit-control state machine and the billing service process
  (``python -m billing``) that runs it;
* ``reports/``  -- statement, destinations, gateways, invoice as CSV / Parquet / XLSX;
* ``cli/``      -- ``sipledger account | ledger | report | rates | rerate``;
* ``application.py`` -- the money commands (accounts, top-ups, adjustments, balances, rerate runs,
  balances at an instant), once, for the service and the offline CLI; ``client.py`` reaches them,
  ``rpc.py`` is their wire;
* ``rerate.py`` -- which corrections a rerate run books (pure; docs/rerating.md);
* ``money.py``, ``errors.py`` -- exact Decimal amounts and their one export format; ``LedgerError``.

The ledger's records on Kafka are the contract's (proxy/contract/ledger.py).  Pure cores -- rating,
the ledger fold, credit control -- do no I/O and read no clock; everything else reads the wall clock
through ``proxy.infra.clock``.  The REST routes live in api/routes/ (accounts, ledger, reports, rates).
"""
