"""The docs show no shell command that no test runs: every shell block is marked, and every mark is run."""

from __future__ import annotations

import re

import pytest

from tests.support.docs import DOCS, REPO_ROOT, blocks, shell_blocks

pytestmark = pytest.mark.timeout(30)


def _fetched_ids() -> set[tuple[str, str]]:
    """(doc, id) pairs that tests name: ``block("README.md", "id")``, ``one_command(SETUP, "id")``,
    ``(README, "id")`` in a parametrize list; README and SETUP are the tests' names for the two docs."""
    names = {"README": "README.md", "SETUP": "REALTIME_TRADES_SETUP.md"}
    pattern = re.compile(r"""(?:["'](?P<doc>[A-Z_]+\.md)["']|\b(?P<const>README|SETUP))"""
                         r"""\s*,\s*["'](?P<id>[A-Za-z0-9_.-]+)["']""")
    found = set()
    for path in (REPO_ROOT / "tests").rglob("*.py"):
        for m in pattern.finditer(path.read_text()):
            found.add((m["doc"] or names[m["const"]], m["id"]))
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_fenced_block_names_its_language(doc):
    bare = [b.line for b in blocks(doc) if not b.lang]
    assert not bare, f"{doc}: fenced blocks without a language at lines {bare} (use sh for commands, text for output)"


@pytest.mark.parametrize("doc", DOCS)
def test_every_shell_block_is_marked_and_marks_are_unique(doc):
    unmarked = [b.line for b in shell_blocks(doc) if b.id is None]
    assert not unmarked, f"{doc}: shell blocks at lines {unmarked} have no <!-- test: ID --> marker"
    ids = [b.id for b in shell_blocks(doc)]
    assert len(ids) == len(set(ids)), f"{doc}: duplicate markers {sorted(i for i in ids if ids.count(i) > 1)}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_marked_shell_block_is_run_by_a_test(doc):
    fetched = _fetched_ids()
    orphans = [(b.line, b.id) for b in shell_blocks(doc) if (doc, b.id) not in fetched]
    assert not orphans, f"{doc}: no test runs the shell blocks {orphans}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS)
def test_the_contents_list_every_section(doc):
    text = (REPO_ROOT / doc).read_text()
    sections = [h for h in re.findall(r"^## (.+)$", text, re.M) if h != "Contents"]
    start = text.index("Contents")
    contents = text[start:text.index("\n## ", start + 10)]
    linked = re.findall(r"\]\(#([^)]+)\)", contents)
    assert linked == [_anchor(h) for h in sections], f"{doc}: the contents do not list the sections in order"
