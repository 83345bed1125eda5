"""Credit control: live calls spend a shared credit, and are torn down before they overspend it.

* ``control`` -- the state machine: authorization, reservations, teardowns, debits; pure (no I/O, no clock);
* ``service`` -- the billing service process (``python -m billing``): UDP authorization, Kafka, admin RPC;
* ``live``    -- the money commands' repository inside the service (live state, then the ledger);
* ``steps``   -- ``billing.calls``: call events repartitioned by account (billing-internal).
"""
