"""What the bridge tells its operator: metrics, logs, traces, and the redaction of secrets."""
