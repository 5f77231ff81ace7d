"""The logger: `click.tracked` events → `tracking_logs` rows, in batches, exactly once."""
