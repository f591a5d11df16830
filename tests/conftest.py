"""Shared fixtures. ``--update-golden`` rewrites the golden files of generated source."""

from __future__ import annotations

from pathlib import Path

import pytest

from paths import REFERENCE


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* from the current output")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"the reference folder {REFERENCE} is missing (it lies beside the checkout as ../shared)")
    return REFERENCE
