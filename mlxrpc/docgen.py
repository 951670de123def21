"""Regenerates the docs derived from code (``python -m mlxrpc.docgen``, ``make docs``):
docs/openapi.json from the REST schemas and the settings table of
docs/configuration.md from Settings. tests/test_docs.py fails on drift.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from .cli import HELP
from .gateway.app import OPERATIONS
from .gateway.http import openapi
from .settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
_TABLE = re.compile(r"\| flag \| environment \| meaning \|\n\|---\|---\|---\|\n(?:\|.*\|\n)+")


def settings_table() -> str:
    rows = [
        f"| `--{f.name.replace('_', '-')}` | `MLXRPC_{f.name.upper()}` | {HELP[f.name]} |"
        for f in fields(Settings)
    ]
    return "| flag | environment | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def configuration_doc(current: str) -> str:
    return _TABLE.sub(lambda _: settings_table(), current)


def main() -> None:
    (DOCS / "openapi.json").write_text(openapi.render(OPERATIONS))
    path = DOCS / "configuration.md"
    path.write_text(configuration_doc(path.read_text()))


if __name__ == "__main__":
    main()
