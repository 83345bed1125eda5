"""Infrastructure every process shares: the one configuration module, Kafka client settings,
SQL store base, ClickHouse back ends and sinks, the supervisor library and the clock.

Not the contract: nothing here crosses a process boundary as data (that is proxy/contract)."""
