"""A MkDocs hook: a Markdown file from outside ``docs/`` included whole into a page.

A page line ``<!-- include: benchmarks/RESULTS.md -->`` is replaced by that file (a path
from the repository root), less its title line, with its links into ``docs/`` made relative
to the page. ``benchmarks/RESULTS.md`` stays the one copy of the measurements, and the site
shows it as it is when the site is built. Only the standard library: nothing to install, and
importable by pytest's ``--doctest-modules``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

_INCLUDE = re.compile(r"^<!-- include: (?P<path>[\w./-]+\.md) -->$", re.MULTILINE)
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")
_ROOT = Path(__file__).resolve().parents[2]


def _included(path: str, page_dir: str) -> str:
    text = (_ROOT / path).read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    source_dir = posixpath.dirname(path)

    def relink(match: re.Match[str]) -> str:
        target, anchor = match.group("target"), match.group("anchor") or ""
        if "://" in target or target.startswith("/"):
            return match.group(0)
        from_root = posixpath.normpath(posixpath.join(source_dir, target))
        if not from_root.startswith("docs/"):
            return match.group(0)
        in_docs = from_root[len("docs/") :]
        return f"]({posixpath.relpath(in_docs, page_dir or '.')}{anchor})"

    return _LINK.sub(relink, "\n".join(lines))


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    page_dir = posixpath.dirname(page.file.src_uri)
    return _INCLUDE.sub(lambda m: _included(m.group("path"), page_dir), markdown)
