"""Lab tests: real network namespaces, so root and iproute2 are required (skipped, with the reason, otherwise).

Puts ``tests/`` on sys.path so ``import harness`` works, marks everything here ``lab``, and offers a ``lab``
fixture that is torn down even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from harness import Lab  # noqa: E402


def _why_no_lab() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "lab tests need iproute2 (ip)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_no_lab()
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.lab)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(prefix="arc") as the_lab:
        yield the_lab
