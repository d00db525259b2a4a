"""Every relative link and #anchor in README.md and docs/*.md resolves.

A link's file must exist (relative to the document that holds it), and its
anchor must be a heading of the target document, slugged as GitHub does:
lower case, punctuation other than '-' and '_' removed, spaces turned to
'-', a repeated heading suffixed -1, -2 ...
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*#*$")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> list[str]:
    """The document's lines outside code: fenced or indented blocks, and inline code spans."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith(("    ", "\t")):
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for line in prose(document.read_text()):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(1))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def broken_links(document: Path) -> list[str]:
    broken = []
    for line in prose(document.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.name}: {target} (no such file)")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                broken.append(f"{document.name}: {target} (no such heading)")
    return broken


def test_slugs_follow_github() -> None:
    assert slug("apply: shards and aggregators added by editing the file") == \
        "apply-shards-and-aggregators-added-by-editing-the-file"
    assert slug("Faults, hostile input and `make chaos`") == "faults-hostile-input-and-make-chaos"
    assert slug("Gray failures: frozen, cut off, slow, replaced") == "gray-failures-frozen-cut-off-slow-replaced"
    assert slug("Gray-failure tools") == "gray-failure-tools"


def test_the_manual_links_within_itself() -> None:
    assert len(documents()) > 1
    links = sum(len(LINK.findall(line)) for d in documents() for line in prose(d.read_text()))
    assert links > 20, "the documents link to each other"


def test_every_relative_link_and_anchor_resolves() -> None:
    assert [b for d in documents() for b in broken_links(d)] == []


def test_every_document_of_the_manual_says_what_it_covers() -> None:
    for document in documents()[1:]:
        paragraphs = document.read_text().split("\n\n")
        assert paragraphs[0].startswith("# ") and len(paragraphs[1].split()) >= 15, document.name
