"""Development tools, not shipped in the wheel: the local upstream, the demo, code generation.

Run from a checkout: `python -m dev.upstream`, `python -m dev.demo`, `python -m dev.codegen`.
"""
