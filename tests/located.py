"""A one-entry spec whose entry is refused: compile exits 2 with the one located line, writes nothing."""

from __future__ import annotations

from nasdsl.cli import main as cli_main


def assert_refused_entry(tmp_path, capsys, entry: str, shape: list[int], said: str) -> None:
    """``model: {layer: ENTRY}`` on an input of ``shape`` (``axes: LC`` when it has two sizes):
    ``nasdsl compile`` prints ``bad.yaml:SAID`` alone on stderr, exits 2 and writes no file."""
    axes = ", axes: LC" if len(shape) == 2 else ""
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: Bad\ninput: {{shape: {shape}{axes}}}\nmodel:\n  layer: {entry}\n")
    assert cli_main(["compile", str(path), "-o", str(tmp_path / "bad.py")]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == f"{path}:{said}" and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
