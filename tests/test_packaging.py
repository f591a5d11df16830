"""The package builds cleanly: no setuptools warnings (license metadata, package data), and the
wheel carries every package and the code-generation templates. Installed as the Makefile installs
it, it is the package Python imports even from the folder that holds the clone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile

import pytest

from paths import ROOT


def _setuptools_home() -> str | None:
    """A folder holding a setuptools that pyproject.toml accepts (>= 77), put first on the path of
    the build (an environment may hold an older one ahead of it), or None."""
    import importlib.metadata

    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"] == "setuptools" and int(dist.version.split(".")[0]) >= 77:
            return str(dist.locate_file(""))
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The project's wheel, built without build isolation, and what the build said."""
    home = _setuptools_home()
    if home is None:
        pytest.skip("no setuptools >= 77 to build with (pyproject.toml asks for it)")
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-v"] + ["-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": home},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (found,) = out.glob("nasdsl-*.whl")
    return found, run.stdout + run.stderr


def test_the_wheel_builds_without_warnings_and_holds_everything(wheel):
    path, output = wheel
    warnings = [line for line in output.splitlines() if "Warning" in line and "Location 'file" not in line]
    assert not warnings, "\n".join(warnings)
    names = set(zipfile.ZipFile(path).namelist())
    assert "nasdsl/backends/templates/pytorch.py.jinja" in names
    for package in ("nasdsl", "nasdsl/passes", "nasdsl/commands", "nasdsl/search", "nasdsl/bench", "nasdsl/backends"):
        assert f"{package}/__init__.py" in names, package


def test_the_installed_package_wins_over_the_clone_seen_from_its_parent_folder(wheel, tmp_path):
    """From the folder that holds a clone named nasdsl, Python finds that folder first and takes
    it for a namespace package; a regular package later on sys.path wins over it, but an import
    hook appended after the path finder (an editable install's) does not: the README's snippet
    failed with `cannot import name '__version__'`. The Makefile installs the package itself
    (a wheel: no setuptools warning, unlike an editable install), and that copy is imported."""
    makefile = (ROOT / "Makefile").read_text()
    (line,) = [ln for ln in makefile.splitlines() if re.search(r"pip install .*\"\.\[test[,a-z]*\]\"", ln)]
    assert " -e " not in line and "--editable" not in line, line
    site = tmp_path / "site"
    zipfile.ZipFile(wheel[0]).extractall(site)  # what pip install puts in site-packages
    holder = tmp_path / "holder"
    holder.mkdir()
    (holder / "nasdsl").symlink_to(ROOT, target_is_directory=True)
    snippet = "import nasdsl\nfrom nasdsl import __version__\nfrom nasdsl.backends.pytorch import generate_source\n"
    done = subprocess.run(
        [sys.executable, "-c", snippet + "print(__version__, nasdsl.__file__)"],
        cwd=holder,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    version, where = done.stdout.split()
    assert version == "0.1.0" and where == str(site / "nasdsl" / "__init__.py")


def test_a_checkout_imports_without_an_install(tmp_path):
    """From the repository's root, the working tree's nasdsl is imported, and nasdsl.backends is
    its backends/ folder (pyproject.toml maps it at install time; nasdsl/__init__.py does it here)."""
    deps = [p for p in sys.path if p.endswith("site-packages")]  # without their .pth files (-S): no install hook
    done = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import nasdsl.backends.pytorch as p, nasdsl; print(p.__file__, nasdsl.__version__)",
        ],
        cwd=ROOT,
        env={"PYTHONPATH": ":".join(deps), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(ROOT / "backends" / "pytorch.py"), "0.1.0"]


def test_every_name_the_scripts_import_from_nasdsl_exists():
    """benchmarks/ and examples/ are run by hand (make bench), not by the suite: a name they import
    from nasdsl that a change removed stops them at their first line. Two benchmarks stopped so for
    months (nasdsl.backends.onnx.initial_state_dict, nasdsl.backends.pytorch.build_model)."""
    import ast
    import importlib

    missing = []
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "examples").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "nasdsl":
                module = importlib.import_module(node.module)
                missing += [
                    f"{path.name}: {node.module}.{a.name}" for a in node.names if not _has(module, node.module, a.name)
                ]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "nasdsl":
                        importlib.import_module(a.name)
    assert not missing, missing


def _has(module, name: str, attribute: str) -> bool:
    """Whether ``from name import attribute`` works: an attribute, or a submodule."""
    import importlib

    if hasattr(module, attribute):
        return True
    try:
        importlib.import_module(f"{name}.{attribute}")
    except ModuleNotFoundError:
        return False
    return True
