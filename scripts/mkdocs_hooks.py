"""MkDocs hooks (mkdocs.yml ``hooks:``): the site's home page is README.md, its links made site-relative.

README.md links to ``docs/PAGE.md`` (right on GitHub and in a checkout); on the site those pages sit
beside the home page, so the ``docs/`` prefix goes. One source, no copy to keep in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")
