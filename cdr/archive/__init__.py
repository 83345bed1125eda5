"""The durable event archive (ClickHouse ``events``) and CDR rebuild: docs/operations.md."""
