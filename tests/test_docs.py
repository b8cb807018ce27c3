"""Every relative link and image in README.md and docs/ resolves, down to its #heading anchor."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
# [text](target "title") and ![alt](target): the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_TARGET = re.compile(r"<(?:a|img)\s[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:


def strip_code(markdown: str) -> str:
    """The text without fenced blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def link_targets(markdown: str) -> list[str]:
    """Every link and image target written in the Markdown, in order."""
    text = strip_code(markdown)
    return [
        match.group(1)
        for pattern in (INLINE_LINK, REFERENCE_DEFINITION, HTML_TARGET)
        for match in pattern.finditer(text)
    ]


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, punctuation other than hyphens
    and underscores dropped, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's or image's text only
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of every heading; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(FENCE.sub("", markdown)):
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """Each relative target in the document that names no file or folder, or no heading in it."""
    markdown = document.read_text(encoding="utf-8")
    problems = []
    for target in link_targets(markdown):
        if EXTERNAL.match(target):
            continue  # not fetched: the test must not depend on the network
        path_part, _, fragment = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if root.resolve() not in (resolved, *resolved.parents):
            problems.append(f"{target}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(root.resolve())}")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == []


def test_the_docs_tree_is_linked_from_the_readme() -> None:
    readme_targets = {target.partition("#")[0] for target in link_targets((ROOT / "README.md").read_text())}
    pages = {f"docs/{path.relative_to(ROOT / 'docs')}" for path in (ROOT / "docs").rglob("*.md")}
    index = (ROOT / "docs" / "README.md").read_text()
    listed = {f"docs/{target.partition('#')[0]}" for target in link_targets(index)}
    assert "docs/README.md" in readme_targets
    assert pages - {"docs/README.md"} <= listed, "list every page in docs/README.md"


def test_slugs_follow_github() -> None:
    assert github_slug("What `make up` starts") == "what-make-up-starts"
    assert github_slug("Latent space: VAEs and GANs") == "latent-space-vaes-and-gans"
    assert github_slug("Style-transfer jobs") == "style-transfer-jobs"
    assert github_slug("Fréchet & the [classifier](models.md)") == "fréchet--the-classifier"
    assert anchors("# Notes\n## Notes\n```\n# not a heading\n```\n") == {"notes", "notes-1"}


def test_broken_links_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Second part\n", encoding="utf-8")
    (tmp_path / "picture.png").write_bytes(b"")
    document = tmp_path / "README.md"
    document.write_text(
        "[fine](docs/page.md#second-part) ![fine](picture.png) [fine](#top) [fine](https://example.invalid/x)\n"
        "`[code](missing.md)` and\n```\n[fenced](missing.md)\n```\n"
        "# Top\n"
        "[gone](docs/missing.md) ![gone](missing.png) [bad anchor](docs/page.md#third-part) [bad](#nowhere)\n"
        "[outside](../elsewhere.md)\n[ref]: docs/absent.md\n",
        encoding="utf-8",
    )
    assert broken_links(document, root=tmp_path) == [
        "docs/missing.md: no such file",
        "missing.png: no such file",
        "docs/page.md#third-part: no heading #third-part in docs/page.md",
        "#nowhere: no heading #nowhere in README.md",
        "../elsewhere.md: points outside the repository",
        "docs/absent.md: no such file",
    ]
