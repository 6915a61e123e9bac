"""A MkDocs hook: Sphinx roles in kldiv's docstrings as links of the API reference.

The docstrings are numpydoc, read by both Sphinx-minded tools and mkdocstrings; they write
cross-references as ``:func:`kldiv.kl_div```, which mkdocstrings renders as the role's name
beside a code span. This turns each into an optional cross-reference of mkdocs-autorefs: a
link where the object is in the API reference, the code span alone where it is not (a
private helper), never a warning. Only ``re``: nothing to install, and importable by
pytest's ``--doctest-modules``.
"""

from __future__ import annotations

import html
import re
from typing import Any

_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|obj|exc):<code>(~?)([\w.]+)</code>")

# The module an undotted name is relative to, by the page the docstring is rendered on.
_MODULE_OF_PAGE = {
    "api/distributions.md": "kldiv.distributions",
    "api/loss.md": "kldiv.loss",
}


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    module = _MODULE_OF_PAGE.get(page.file.src_uri, "kldiv")

    def link(match: re.Match[str]) -> str:
        tilde, name = match.groups()
        identifier = name if "." in name else f"{module}.{name}"
        shown = name.rsplit(".", 1)[-1] if tilde else name
        return (
            f'<autoref identifier="{html.escape(identifier)}" optional>'
            f"<code>{html.escape(shown)}</code></autoref>"
        )

    return _ROLE.sub(link, html_text)
