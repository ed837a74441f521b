"""Tests that need a toolchain besides Python (Go, Node/npm, a JDK with Maven, Rust/cargo).

On a developer's machine without one, such a test is skipped with a reason naming what is
missing; under CI (`CI=true`, as `.ci/run` is started) the full suite is required, so a
missing toolchain fails the test instead of hiding it.
"""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(what: str, *commands: str) -> None:
    """Skip (fail under CI) unless every command is on PATH; `what` says who needs them."""
    missing = [command for command in commands if shutil.which(command) is None]
    if not missing:
        return
    reason = f"{what} needs {', '.join(f'`{c}`' for c in missing)} on PATH"
    if under_ci():
        pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
    pytest.skip(reason)
