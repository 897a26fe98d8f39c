"""The README and docs/ pages link to each other by file and heading: every relative link must name a file that
exists and, with a `#fragment`, a heading of that file (GitHub's anchor rule), so no detail that left the README
is lost behind a dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to
    hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", body, re.M)}


def links(page: Path) -> list[str]:
    body = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(body) if not re.match(r"[a-z]+:", t)]


def test_anchor_rule():
    assert anchor("DiTs and SDXL, live") == "dits-and-sdxl-live"
    assert anchor("Bias: what the balance bias costs") == "bias-what-the-balance-bias-costs"
    assert anchor("The bench: its engine and its families") == "the-bench-its-engine-and-its-families"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path):
    dead = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            dead.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            dead.append(f"{target}: no heading #{fragment} in {file.name}")
    assert not dead, f"{page.name}: " + "; ".join(dead)
