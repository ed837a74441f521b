"""The HTTP side: the client, its transport, retries, bodies, SSE streams and failures."""
