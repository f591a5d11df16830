"""The repository is self-contained: nothing in it reads or cites a path outside it.

A fresh clone has only the repository, so a test that reads a folder beside the checkout, or a
document that points at one, breaks for everyone but its author. This scans every file git
knows about (tracked, or new and not ignored; the whole tree, less caches and virtualenvs, when
git is not there) for paths that leave the repository, and checks that every relative link of
the Markdown files leads to a file of the repository.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import pytest

from paths import ROOT

# Folders that are never part of the repository (caches, virtualenvs, build output), for the
# walk that stands in for git when git is missing.
NOT_SOURCE = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
NOT_SOURCE |= {"build", "dist", "out", "node_modules"}

# What a path outside the repository looks like. Each alternative is one way of leaving it.
OUTSIDE = re.compile(
    r"""
      (?P<sibling> (?<![\w.]) (?:\.\.[/\\])+ shared\b | \bshared[/\\]reference\b )
                                                   # the reference folder that lay beside the checkout
    | (?P<absolute> (?<![\w.~-]) /(?:work|home|tmp|Users|root|mnt)/ )
                                                   # an absolute path on somebody's machine
    | (?P<windows> (?<![\w]) [A-Za-z]:\\(?:Users|home)\\ )
    | (?P<home> (?<![\w~]) ~/[\w.] )                # a home folder
    | (?P<above_root> \b(?:ROOT|REPO|REPOSITORY)\.parent\b | \bROOT\s*/\s*["']\.\. )
                                                   # the folder that holds the checkout
    | (?P<up> (?<![\w.]) \.\.[/\\] | (?<![\w.]) ["']\.\.["'] )
                                                   # a relative path that climbs to the parent folder
    """,
    re.VERBOSE,
)
# The whole relative path that climbs, to resolve it: in Markdown, where links are relative to
# the page, a link from docs/ to the parent folder's specs/ stays inside the repository.
CLIMBING_PATH = re.compile(r"(?<![\w.])(?:\.\.[/\\])+[^\s)\]\"'`>]*")


def outside_references(text: str, relpath: str = "x.py") -> list[tuple[int, str]]:
    """``(line, text)`` for every path in ``text`` that leaves the repository; ``relpath`` is
    where the text lies in it. In a Markdown file a path that climbs to a parent folder is fine
    if it stays inside the repository, counted from the page's folder; so it is in a spec (YAML),
    whose paths (``extends``, an ensemble's member specs) are relative to the spec's folder;
    anywhere else it is relative to whatever the working directory is, and never fine."""
    markdown = relpath.endswith((".md", ".yaml"))
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for m in OUTSIDE.finditer(line):
            if m.lastgroup == "up" and markdown and m.group().endswith(("/", "\\")):
                climbing = CLIMBING_PATH.match(line, m.start())
                target = posixpath.normpath(posixpath.join(posixpath.dirname(relpath), climbing.group()))
                if target.split("/")[0] != posixpath.pardir:
                    continue
            found.append((number, m.group()))
    return found


def repository_files(root: Path = ROOT) -> list[str]:
    """The repository's files, relative to ``root`` (POSIX form): what ``git ls-files`` lists,
    tracked or new and not ignored, that exists; without git, the tree less caches and
    virtualenvs."""
    git = shutil.which("git")
    if git:
        done = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
        )
        if done.returncode == 0:
            names = sorted({n for n in done.stdout.decode("utf-8").split("\0") if n})
            return [n for n in names if (root / n).is_file()]
    files = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p in NOT_SOURCE or p.endswith(".egg-info") for p in parts[:-1]):
            continue
        if path.is_file() and not path.name.endswith((".pyc", ".pyo")):
            files.append(PurePosixPath(*parts).as_posix())
    return files


def read_text(path: Path) -> str | None:
    """The file's text, or ``None`` for a binary file (a NUL byte, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def scan(root: Path, files: list[str]) -> list[str]:
    """``path:line: text`` for every reference outside the repository in the text files."""
    problems = []
    for name in files:
        text = read_text(root / name)
        if text is not None:
            problems += [f"{name}:{line}: {found}" for line, found in outside_references(text, name)]
    return problems


# -- Markdown links -----------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
INLINE_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
DEFINITION = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def link_targets(text: str) -> list[str]:
    """The targets of the links and images of a Markdown text, code blocks and spans left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return [m.group(1) for m in INLINE_LINK.finditer(text)] + [m.group(1) for m in DEFINITION.finditer(text)]


def broken_links(text: str, relpath: str, files: set[str]) -> list[str]:
    """The relative link targets of the Markdown file ``relpath`` that are not a file (or a
    folder holding one) of ``files``, the repository's files. Web addresses and links within
    the page (``#...``) are not checked."""
    folders = set()
    for name in files:
        folder = posixpath.dirname(name)
        while folder:
            folders.add(folder)
            folder = posixpath.dirname(folder)
    broken = []
    for target in link_targets(text):
        if SCHEME.match(target) or target.startswith("#"):
            continue
        path = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if path.startswith("/"):  # relative to the repository's root, as GitHub reads it
            resolved = posixpath.normpath(path.lstrip("/"))
        else:
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relpath), path))
        if resolved.split("/")[0] == posixpath.pardir or resolved not in files | folders:
            broken.append(target)
    return broken


# -- the repository -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> list[str]:
    names = repository_files()
    assert "tests/test_self_contained.py" in names and "README.md" in names
    return names


def test_no_file_refers_to_a_path_outside_the_repository(files):
    problems = scan(ROOT, files)
    assert not problems, "paths outside the repository:\n" + "\n".join(problems)


def test_markdown_links_lead_to_files_of_the_repository(files):
    pages = [f for f in files if f.endswith(".md")]
    assert "README.md" in pages and any(p.startswith("docs/") for p in pages)
    broken = []
    for page in pages:
        text = read_text(ROOT / page)
        broken += [f"{page}: ({target})" for target in broken_links(text, page, set(files))]
    assert not broken, "links to nothing in the repository:\n" + "\n".join(broken)


# -- the checks themselves ------------------------------------------------------------------
# The examples write "|" for "/" so that this file does not itself hold what it looks for.


def planted(text: str) -> str:
    return text.replace("|", "/")


@pytest.mark.parametrize(
    "text",
    [
        planted('REFERENCE = Path("..|shared|reference|x")'),
        planted("see ..|shared|reference|googlenet.md"),
        planted("the notes in shared|reference|googlenet.md"),
        planted("read `..|shared` for the figures"),
        planted('open("|work|shared|reference|googlenet.md")'),
        planted("weights in |home|someone|weights.pt"),
        planted('out = "|tmp|out.onnx"'),
        planted("(|Users|me|x.yaml)"),
        planted("cp ~|data|x.yaml ."),
        "C:" + "\\Users\\me\\x.yaml",
        "REFERENCE = ROOT" + ".parent / 'other'",
        "ROOT / '" + posixpath.pardir + "' / 'x'",
        planted('load("..|..|data|x.csv")'),
        planted('Path(__file__).parent / "..|..|..|x"'),
        planted(".ci|..|..|x"),
    ],
)
def test_outside_references_finds_planted_paths(text):
    assert outside_references(text, "tests/test_x.py"), text


@pytest.mark.parametrize(
    "text",
    [
        "from ..passes import shapes",
        "from . import cli",
        "the template's text is shared by all its uses",
        "wait... then a|...|b, and 1..3",
        planted('"\\e]0;...\\a"'),
        planted("DATA = ROOT | 'tests' | 'data'"),
        planted("see tests|data|googlenet_table1.csv"),
        planted("https:||github.com|home|tmp|x and http:||example.org|work|"),
        "ROOT = Path(__file__).resolve().parent.parent",
        "base_path = path.parent / ext",
        planted('cd "$(dirname "$0")|.."'),
        "a: ~\nb: null\n" + '" " * i + "k:\\n"',
        planted("a shared|folder is not the reference"),
    ],
)
def test_outside_references_lets_repository_paths_be(text):
    assert outside_references(text, "tests/test_x.py") == [], text


def test_markdown_may_climb_but_not_out_of_the_repository():
    inside = planted("[the spec](..|specs|googlenet.yaml)")
    outside = planted("[the notes](..|..|notes|googlenet.md)")
    assert outside_references(inside, "docs/spec-language.md") == []
    assert outside_references(inside, "README.md") != []
    assert outside_references(outside, "docs/spec-language.md") != []
    assert outside_references(inside, "tests/test_x.py") != []  # outside Markdown, never


def test_a_planted_reference_in_a_test_or_a_doc_fails_the_scan(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(planted('DATA = "..|shared|reference|x"\n'))
    (tmp_path / "docs" / "page.md").write_text(planted("The figures are in ..|shared|reference|x.\n"))
    (tmp_path / "docs" / "fine.md").write_text(planted("See [the specs](..|specs|x.yaml).\n"))
    (tmp_path / "blob.bin").write_bytes(planted("\0..|shared|reference|x").encode())
    files = ["blob.bin", "docs/fine.md", "docs/page.md", "tests/test_x.py"]
    assert scan(tmp_path, files) == [planted("docs/page.md:1: ..|shared"), planted("tests/test_x.py:1: ..|shared")]


def test_repository_files_without_git(tmp_path, monkeypatch):
    for name in ["README.md", "tests/a.py", ".venv/lib/x.py", "tests/__pycache__/a.pyc", "x.egg-info/PKG-INFO"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert repository_files(tmp_path) == ["README.md", "tests/a.py"]


def test_broken_links_finds_links_to_nothing():
    files = {"README.md", "docs/ir.md", "docs/examples/tour.yaml", "specs/googlenet.yaml"}
    page = planted(
        "[ir](ir.md) [ir section](ir.md#nodes) [spec](..|specs|googlenet.yaml) [examples](examples|)\n"
        "[root](|README.md) [web](https:||example.org|missing.md) [here](#top) [mail](mailto:a@b.c)\n"
        '![figure](examples|tour.yaml "a title")\n'
        "`[not a link](missing.md)`\n"
        "```\n[also not](missing.md)\n```\n"
        "[gone](gone.md) [out](..|..|outside.md) [typo](..|spec|googlenet.yaml) [missing dir](nothing|)\n"
        "[ref]: ..|specs|nothing.yaml\n"
    )
    assert broken_links(page, "docs/spec-language.md", files) == [
        "gone.md",
        planted("..|..|outside.md"),
        planted("..|spec|googlenet.yaml"),
        planted("nothing|"),
        planted("..|specs|nothing.yaml"),
    ]
