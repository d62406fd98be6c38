"""The shell blocks of README.md and REALTIME_TRADES_SETUP.md, so tests can run exactly what the docs show.

A block is a fenced ``sh`` block with a marker line just above it (a blank line between them is allowed)::

    <!-- test: demo-start -->
    ```sh
    ./services/start_trade_stream.sh --demo
    ```

The marker names the block; a test fetches it with ``block("README.md", "demo-start")`` and runs it (on the host,
or inside the deployment container for the systemd and Apache steps). ``tests/unit/test_docs.py`` fails when a
shell block has no marker or when no test fetches a marked block, so the docs cannot show a command that no test
runs. Fences may be indented (inside a list); the indent is removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "REALTIME_TRADES_SETUP.md")
SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[A-Za-z0-9_+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<id>[A-Za-z0-9_.-]+)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  #: 1-based line of the opening fence
    lang: str
    id: str | None
    text: str


def blocks(doc: str) -> list[Block]:
    """Every fenced block of ``doc`` (a name in DOCS), in order."""
    lines = (REPO_ROOT / doc).read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m["indent"], m["lang"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (_FENCE.match(lines[i]) and lines[i].strip() == "```"):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = _MARKER.match(lines[j]) if j >= 0 else None
        found.append(Block(doc, start + 1, lang, marker["id"] if marker else None, "\n".join(body) + "\n"))
    return found


def shell_blocks(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if b.lang in SHELL_LANGS]


def block(doc: str, block_id: str) -> str:
    """The text of the shell block of ``doc`` marked ``block_id``; KeyError if there is none."""
    for b in shell_blocks(doc):
        if b.id == block_id:
            return b.text
    raise KeyError(f"{doc} has no shell block marked <!-- test: {block_id} -->")


def commands(text: str) -> list[str]:
    """A block's commands, one per line, without comments, blank lines or trailing ``# ...`` remarks."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out
