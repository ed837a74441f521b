"""A local OpenAI-compatible upstream for tests, the demo and `make dev-upstream`."""
