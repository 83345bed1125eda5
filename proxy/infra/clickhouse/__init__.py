"""ClickHouse: one schema for chdb (embedded) and a server, the back ends, migrations and the
topic -> table sink."""
