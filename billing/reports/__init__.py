"""Billing reports: statement, destinations, gateways, invoice -- as CSV, Parquet or XLSX, money exact.

* ``build``   -- the reports (pandas frames) and their typed column schemas (pyarrow);
* ``sources`` -- where the events come from: the SQL ledger (CLI) or its ClickHouse copy (API);
* ``export``  -- the files, one formatting rule for money whoever asks (CLI or REST).
"""
