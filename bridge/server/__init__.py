"""The server process: assembly, worker processes, drain, health, reflection and the probe."""
