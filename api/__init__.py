"""sipledger operator-facing programs: CLI, embedded services."""
