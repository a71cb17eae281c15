"""Tests that need a tool outside the dev extras (the loopback Hub server, W&B's `sweeps` schema).

Outside CI such a test is skipped with the command that installs the tool; under CI (`CI=true`, as
`.ci/run` sets it) it fails instead, so CI never passes with those tests silently left out.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def tool_missing(what: str, install: str) -> None:
    """Skip (or, under CI, fail) the calling test: `what` is not available, `install` says how to get it."""
    message = f"{what} is not available; install it with: {install}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)
