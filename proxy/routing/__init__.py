"""Routing data: gateways and routes (drouting), dialplans, blacklists, trusted
sources, groups and call forwarding — pure decision logic, its SQL store in the
provisioning database, the live snapshot and the operator's CLI."""
