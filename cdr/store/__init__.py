"""The CDR store: ClickHouse (chdb embedded, or a server) — schema, back ends,
the Kafka sink and the queries the REST API serves."""
