"""The Markdown the docs tests read: fenced code blocks, links and the anchors GitHub gives headings.

Only as much of CommonMark as the repository's files use: fences of backticks or tildes (possibly indented in a
list), inline links and images, reference definitions, `<url>` autolinks, ATX headings and `<a id>` anchors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target "title") and ![alt](target): the text may hold one level of brackets, the target parentheses.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(?P<target><[^>\n]*>|(?:[^\s()]|\([^\s()]*\))*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(?P<target>\S+)", re.M)
AUTOLINK = re.compile(r"<(?P<target>[a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(?P<text>.*?)(?:\s+#+)?\s*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"(?P<id>[^\"]+)\"", re.I)


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based
    end: int  # of the closing fence


@dataclass(frozen=True)
class Link:
    target: str
    line: int


def fenced_blocks(markdown: str) -> list[Block]:
    blocks = []
    lines = markdown.splitlines()
    start = None
    for number, line in enumerate(lines):
        match = FENCE.match(line)
        if start is None and match:
            start, indent, fence, lang = number, len(match["indent"]), match["fence"], match["lang"]
        elif start is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            body = [re.sub(f"^ {{0,{indent}}}", "", text) for text in lines[start + 1 : number]]  # the fence's indent
            blocks.append(Block(lang, "\n".join(body), start + 1, number + 1))
            start = None
    return blocks


def outside_fences(markdown: str) -> str:
    """The text with fenced blocks blanked in place, so offsets keep their line numbers."""
    lines = markdown.splitlines()
    for block in fenced_blocks(markdown):
        lines[block.line - 1 : block.end] = [""] * (block.end - block.line + 1)
    return "\n".join(lines)


def prose(markdown: str) -> str:
    """The text outside fenced blocks and code spans (blanked in place): where GitHub renders links."""
    return CODE_SPAN.sub(lambda code: re.sub(r"[^\n]", " ", code[0]), outside_fences(markdown))


def links(markdown: str) -> Iterator[Link]:
    text = prose(markdown)
    for pattern in (INLINE_LINK, REFERENCE, AUTOLINK):
        for match in pattern.finditer(text):
            yield Link(match["target"].strip("<>"), text.count("\n", 0, match.start()) + 1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lowercased, punctuation but `-` and `_` dropped, spaces
    to `-`."""
    rendered = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", rendered.lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every `#fragment` that lands in this file: heading slugs (a repeated one gets -1, -2, ... as on GitHub) and
    explicit `<a id>` anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = outside_fences(markdown)
    for match in HEADING.finditer(text):
        base = slug(match["text"])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(match["id"] for match in HTML_ANCHOR.finditer(text))
    return found
