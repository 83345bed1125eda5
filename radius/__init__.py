"""RADIUS accounting (RFC 2866) of sipledger calls: a stream processor from
``sip.events`` to FreeRADIUS / any RADIUS accounting server, with a durable
retry queue.  Run it with ``python -m radius``."""
