"""Shared fixtures. ``--update-golden`` rewrites the golden files of generated source."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: the workers share the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# the pass manager runs the full verifier after every pass (every node's type, every fact a graph
# claims) everywhere in the suite, and so in CI (nasdsl/passes/pipeline.py)
os.environ["NASDSL_VERIFY"] = "full"

from paths import DATA


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* from the current output")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def torchvision_googlenet_state_dict() -> dict[str, tuple[int, ...]]:
    """torchvision's GoogLeNet's state_dict, aux heads included, as ``{key: shape}`` in its order,
    from tests/data/torchvision_googlenet_state_dict.txt (its header names the source)."""
    entries = {}
    for line in (DATA / "torchvision_googlenet_state_dict.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split()
        assert key not in entries, key
        entries[key] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    assert len(entries) == 364
    return entries
