"""Measured figures live in docs/BENCHMARKS.md only; everything else points there by section.

A figure copied into the README, the design notes or a docstring goes stale the first time
the benchmark is run again, and nobody knows which copy is right. So the other documents and
the code name the section instead (`docs/BENCHMARKS.md, "The C fast lane"`), and this test
checks both halves: that the prose carries no per-request cost figure, and that every
section it names exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
PROSE = [REPO / "README.md", REPO / "docs" / "design.md", REPO / "docs" / "TUNING.md"]
CODE_EXCLUDED: tuple[str, ...] = ()

#: What a cost figure looks like: a time per something in µs or ns, a count of instructions,
#: a percentage, or a ratio like "2.2x".
FIGURE = re.compile(r"\d[\d,.]*\s?(?:µs|ns)\b|\d[\d,.]*k?\s+instructions|\d+(?:\.\d+)?\s?%"
                    r"|\b\d+(?:\.\d+)?x\b")
#: Figures in code comments that are design constants or arithmetic, not measurements:
#: (file under src/veloxy, a piece of the line).
DESIGN_CONSTANTS = {
    ("demo.py", "The fixed rate is 60% of"),
    ("doctor.py", "not evenly: allow 25 %"),
    ("lab/html.py", "(1/(1-p): 50 %, 90 %"),
    ("loadgen/histogram.py", "1 µs to 1 h at 3 significant digits"),
    ("upstream/balance.py", "below 1 % two servers"),
    ("upstream/balance.py", "ketama's 160: about 5 % spread"),
    ("upstream/balance.py", "err = error rate + 1 %"),
    ("upstream/balance.py", "a server 2x slower still wins"),
    ("upstream/balance.py", "and one 10x slower only on a stale estimate"),
    ("upstream/balance.py", "5 % errors against none weigh like answering 1.8x slower"),
    ("upstream/endpoint.py", "a 10x slower server is noticed"),
}
SECTION_REFERENCE = re.compile(r'BENCHMARKS\.md,\s+\\?"([^"\\]+)\\?"')


def headings(text: str) -> list[str]:
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def code_files() -> list[Path]:
    src = REPO / "src" / "veloxy"
    return [p for p in sorted(src.rglob("*.py"))
            if p.relative_to(src).parts[0] not in CODE_EXCLUDED]


def comments_and_docstrings(source: str) -> str:
    """The prose of a Python file: # comments and triple-quoted strings (figures in format
    strings and in data are output, not claims)."""
    parts = re.findall(r"#[^\n]*", source)
    parts += re.findall(r'"""(.*?)"""', source, flags=re.S)
    return "\n".join(parts)


@pytest.mark.parametrize("path", PROSE, ids=lambda p: p.name)
def test_prose_names_benchmark_sections_instead_of_figures(path: Path) -> None:
    found = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)
             if FIGURE.search(line)]
    assert found == []


def test_code_comments_carry_no_measured_figures() -> None:
    """A figure in a comment that is not a known design constant: if it was measured, move
    it to docs/BENCHMARKS.md and name the section; if it is a constant, list it above."""
    src = REPO / "src" / "veloxy"
    found = []
    for path in code_files():
        name = path.relative_to(src).as_posix()
        for line in comments_and_docstrings(path.read_text()).splitlines():
            if FIGURE.search(line) and not any(
                    name == file and piece in line for file, piece in DESIGN_CONSTANTS):
                found.append(f"{name}: {line.strip()}")
    assert found == []


def test_every_benchmark_section_named_exists() -> None:
    sections = headings(BENCHMARKS.read_text())
    named = []
    for path in [*PROSE, *code_files()]:
        text = re.sub(r"\s+", " ", path.read_text())
        named += [(path.name, name) for name in SECTION_REFERENCE.findall(text)]
    assert len(named) >= 10, named  # the references this test exists for are still found
    missing = [(file, name) for file, name in named
               if not any(heading.startswith(name) for heading in sections)]
    assert missing == []
