"""No link in the repository's Markdown leaves it: every link and image of a tracked .md file is a relative path
to a tracked file or folder, and a `#fragment` into a Markdown file names a heading (or `<a id>`) it has. A link
to a file that exists only on the writer's machine (.work/, a generated file) breaks on a fresh clone."""

from __future__ import annotations

import posixpath
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import pytest

from tests.docs.markdown import anchors, links

ROOT = Path(__file__).resolve().parents[2]


@cache
def tracked() -> frozenset[str]:
    """What a fresh clone has (empty outside a git checkout: the first test says so)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout
    return frozenset(path for path in listed.split("\0") if path and not path.startswith(".venv/"))


@cache
def folders() -> frozenset[str]:
    return frozenset(str(folder) for path in tracked() for folder in PurePosixPath(path).parents)


def markdown_files() -> list[str]:
    return sorted(path for path in tracked() if path.endswith(".md"))


def problem(source: str, target: str) -> str | None:
    """What is wrong with `target`, linked from the tracked file `source`; None when it is a good link."""
    path, _, fragment = target.partition("#")
    if ":" in path.split("/")[0] or path.startswith("/") or target.startswith("//"):
        return "leaves the repository (use a path relative to the file)"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), unquote(path))) if path else source
    if resolved == ".." or resolved.startswith("../"):
        return "points outside the repository"
    if resolved not in tracked() and resolved not in folders():
        return f"{resolved} is not a tracked file or folder"
    if fragment and resolved.endswith(".md") and fragment not in anchors((ROOT / resolved).read_text()):
        return f"{resolved} has no heading with the anchor #{fragment}"
    return None


def test_there_are_markdown_files_to_check() -> None:
    found = set(markdown_files())
    assert {"README.md", "service/README.md", "docs/architecture.md"} <= found, f"`git ls-files` in {ROOT}: {found}"


@pytest.mark.parametrize("source", markdown_files())
def test_every_link_stays_in_the_repository_and_resolves(source: str) -> None:
    broken = [
        f"{source}:{link.line}: ({link.target}) {reason}"
        for link in links((ROOT / source).read_text())
        if (reason := problem(source, link.target))
    ]
    assert not broken, "\n".join(broken)


def test_the_checker_refuses_what_github_would_break_on() -> None:
    assert problem("README.md", "service/README.md#api") is None
    assert problem("service/README.md", "../docs/architecture.md") is None
    assert problem("README.md", "adapters/shipped/") is None
    no_heading = "docs/architecture.md has no heading with the anchor #no-such-heading"
    assert problem("docs/architecture.md", "#no-such-heading") == no_heading
    for outside in ("https://example.com", "http://127.0.0.1:8000/", "file:///etc/passwd", "/README.md", "mailto:a@b"):
        assert problem("README.md", outside) == "leaves the repository (use a path relative to the file)"
    assert problem("README.md", "../README.md") == "points outside the repository"
    assert problem("README.md", ".work/data/admin_key") == ".work/data/admin_key is not a tracked file or folder"
