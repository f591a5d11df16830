"""The package builds cleanly: no setuptools warnings (license metadata, package data), and the
wheel carries every package and the code-generation templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from paths import ROOT


def test_the_wheel_builds_without_warnings_and_holds_everything(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-v"]
        + ["-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    output = run.stdout + run.stderr
    warnings = [line for line in output.splitlines() if "Warning" in line and "Location 'file" not in line]
    assert not warnings, "\n".join(warnings)
    (wheel,) = tmp_path.glob("nasdsl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "nasdsl/backends/templates/pytorch.py.jinja" in names
    for package in ("nasdsl", "nasdsl/passes", "nasdsl/commands", "nasdsl/bench", "nasdsl/backends"):
        assert f"{package}/__init__.py" in names, package
