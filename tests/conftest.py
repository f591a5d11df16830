"""Shared fixtures. ``--update-golden`` rewrites the golden files of generated source."""

from __future__ import annotations

import gc
import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: the workers share the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# the pass manager runs the full verifier after every pass (every node's type, every fact a graph
# claims) everywhere in the suite, and so in CI (nasdsl/passes/pipeline.py)
os.environ["NASDSL_VERIFY"] = "full"

from paths import DATA


def _one_thread_onnx_runtime() -> None:
    """ONNX Runtime's sessions on one thread where they ask for none in particular (its default is
    a thread per core, which the workers only take from each other)."""
    import onnxruntime

    class OneThreadSession(onnxruntime.InferenceSession):
        def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
            if sess_options is None:
                sess_options = onnxruntime.SessionOptions()
            if sess_options.intra_op_num_threads == 0:
                sess_options.intra_op_num_threads = 1
            super().__init__(path_or_bytes, sess_options, providers, provider_options, **kwargs)

    onnxruntime.InferenceSession = OneThreadSession


if os.environ.get("PYTEST_XDIST_WORKER"):
    _one_thread_onnx_runtime()

#: the test files that take longest, longest first (the sums of their tests' CPU times in a run of
#: the whole suite on 2 cores). The suite runs a file at a time on a worker (``--dist loadfile`` in
#: pyproject.toml: a module's shared fixtures and caches are made once); starting with the longest
#: files leaves short ones for the end, so that the workers finish together. The other files follow
#: in their usual order; a file missing here only costs balance.
LONGEST_FIRST = (
    "test_families.py",
    "test_pytorch.py",
    "test_onnx.py",
    "test_space.py",
    "test_hostile.py",
    "test_import_onnx_dynamo.py",
    "test_ir.py",
    "test_optimize.py",
    "test_search.py",
    "test_compose.py",
    "test_export.py",
    "test_hostile_surfaces.py",
    "test_train.py",
    "test_search_hostile.py",
    "test_any_rank.py",
    "test_properties.py",
    "test_cli.py",
    "test_counting.py",
    "test_import.py",
    "test_video.py",
    "test_draw.py",
    "test_loader.py",
)


# The cyclic garbage collector: a full collection walks every object alive, and after the imports
# (torch, torchvision, onnx...) and the collection of some 3,500 tests those are millions; with
# Python's default thresholds it ran once every 700 allocations and took 7% of the suite's time.
# Collecting when 10,000 allocations have piled up, and leaving what exists once the tests are
# collected out of later collections (gc.freeze), halves that; no test depends on when cyclic
# garbage goes (those that need it gone call gc.collect()).
gc.set_threshold(10_000, 10, 10)


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's order is kept


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
