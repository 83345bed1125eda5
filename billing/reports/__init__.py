"""Billing reports: statement, destinations, gateways, invoice -- as CSV, Parquet or XLSX, money exact.

* ``build``   -- the reports (pandas frames) and their typed column schemas (pyarrow);
* ``sources`` -- where the events come from: the SQL ledger (CLI) or its ClickHouse copy (API);
* ``export``  -- the files, one formatting rule for money whoever asks (CLI or REST).

``FORMATS`` lives here, not in ``export``: the CLI checks ``--format`` without
importing pandas and pyarrow (0.3 s) for commands that never write a file.
"""

FORMATS = ("csv", "parquet", "xlsx")
