"""The namespaced lab's tests need a machine that can create network namespaces (root).

Elsewhere they skip, saying why; on CI (the CI variable set, as CI runners do and as the CI
run of this repository does) a machine that cannot is a failure, never a silent skip: those
tests are the only proof of the partition scenario (issue 17)."""

from __future__ import annotations

import os

import pytest


def require_netns() -> None:
    from drkit.lab import netns

    why = netns.available()
    if not why:
        return
    message = f"namespaces topology unavailable here: {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run the namespaced lab's tests)")
    pytest.skip(message)
