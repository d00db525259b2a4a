"""References in the repository lead somewhere inside it.

Code and documents cite the invariants as "README, Invariants N": each N must
be an item of the README's numbered Invariants section, and no file may send
a reader to a design document the repository does not have.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Spelled in two pieces so that this file does not match itself.
MISSING_DOCUMENT = re.compile("DESIGN" + r"(\.md|\s+invariant)", re.IGNORECASE)
CITATION = re.compile(r"Invariants,?\s+(\d+)")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [ROOT / name for name in names.splitlines()]
    return [f for f in files if f.is_file() and b"\0" not in f.read_bytes()[:4096]]


def invariant_numbers() -> list[int]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Invariants\n", 1)[1].split("\n## ", 1)[0]
    return [int(n) for n in re.findall(r"^(\d+)\. \*\*", section, re.MULTILINE)]


def test_the_invariants_are_numbered_one_to_eight() -> None:
    assert invariant_numbers() == list(range(1, 9))


def test_no_file_cites_a_design_document_that_does_not_exist() -> None:
    offenders = [f"{f.relative_to(ROOT)}:{i}" for f in tracked_text_files()
                 for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
                 if MISSING_DOCUMENT.search(line)]
    assert offenders == []


def test_every_cited_invariant_exists() -> None:
    numbers = set(invariant_numbers())
    cited = {(str(f.relative_to(ROOT)), int(n)) for f in tracked_text_files()
             for n in CITATION.findall(f.read_text(errors="replace"))}
    assert cited, "the code cites the invariants"
    assert {c for c in cited if c[1] not in numbers} == set()
