"""References in the repository lead somewhere inside it.

Code and documents cite the invariants as "docs/design.md, Invariants N": each
N must be an item of the numbered Invariants section of docs/design.md. A
citation of a section ("docs/operations.md, Start order") names a heading of
that document, and no file may send a reader to a design document the
repository does not have.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVARIANTS_DOCUMENT = "docs/design.md"
# Spelled in two pieces so that this file does not match itself.
MISSING_DOCUMENT = re.compile("DESIGN" + r"(\.md|\s+invariant)", re.IGNORECASE)
THE_DOCUMENT = "design" + ".md"  # docs/ holds it, in lower case
CITATION = re.compile(r"Invariants,?\s+(\d+)")
# "docs/contract.md, Batches", "docs/design.md, Writer: clocks", "docs/design.md,\n    # Invariants 5"
SECTION_CITATION = re.compile(r"(README|docs/[a-z]+\.md),\s+(?:#\s*|//\s*)?\"?"  # the document, then its section
                              r"([A-Za-z][A-Za-z ]*?)(?=[:,).\"]|\s+(?:\d|N\b)|\s*$)", re.MULTILINE)


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [ROOT / name for name in names.splitlines()]
    return [f for f in files if f.is_file() and b"\0" not in f.read_bytes()[:4096]]


def headings(document: str) -> list[str]:
    text = (ROOT / document).read_text()
    return [h.strip().lower() for h in re.findall(r"^#+ (.*)$", text, re.MULTILINE)]


def invariant_numbers() -> list[int]:
    text = (ROOT / INVARIANTS_DOCUMENT).read_text()
    section = text.split("\n## Invariants\n", 1)[1].split("\n## ", 1)[0]
    return [int(n) for n in re.findall(r"^(\d+)\. \*\*", section, re.MULTILINE)]


def test_the_invariants_are_numbered_one_to_eight() -> None:
    assert invariant_numbers() == list(range(1, 9))


def test_no_file_cites_a_design_document_that_does_not_exist() -> None:
    def cites_a_missing_one(f: Path, line: str) -> bool:
        # docs/design.md is in the repository (and so is a link to it from beside it in docs/); nothing else is.
        return any(not (m.group(0) == THE_DOCUMENT and (line[:m.start()].endswith("docs/") or f.parent.name == "docs"))
                   for m in MISSING_DOCUMENT.finditer(line))
    offenders = [f"{f.relative_to(ROOT)}:{i}" for f in tracked_text_files()
                 for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
                 if cites_a_missing_one(f, line)]
    assert offenders == []


def test_every_cited_invariant_exists() -> None:
    numbers = set(invariant_numbers())
    cited = {(str(f.relative_to(ROOT)), int(n)) for f in tracked_text_files()
             for n in CITATION.findall(f.read_text(errors="replace"))}
    assert cited, "the code cites the invariants"
    assert {c for c in cited if c[1] not in numbers} == set()


def test_the_invariants_are_cited_where_they_are() -> None:
    """The invariants left the README for docs/design.md: no citation may send a reader back."""
    offenders = [f"{f.relative_to(ROOT)}:{i}" for f in tracked_text_files()
                 for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
                 if re.search(r"README,?\s+Invariants", line)]
    assert offenders == []


def test_every_cited_section_exists() -> None:
    cited = {(str(f.relative_to(ROOT)), document, section) for f in tracked_text_files()
             for document, section in SECTION_CITATION.findall(f.read_text(errors="replace"))}
    assert any(document == INVARIANTS_DOCUMENT for _, document, _ in cited), "the code cites docs/design.md"
    missing = {(where, document, section) for where, document, section in cited
               if not any(section.lower() in h for h in headings("README.md" if document == "README" else document))}
    assert missing == set()
