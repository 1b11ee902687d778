"""The sans-IO boundary: nothing in resip/core does I/O, reads a clock or draws on a terminal.

The core takes bytes, addresses and ``now`` and returns bytes, events and deadlines
(docs/ARCHITECTURE.md §1); that is what lets the simulator run both ends at
thousands of simulated seconds per real second. The check is on imports, read
from the source with ``ast`` (a lazy import inside a function counts too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).parents[2] / "resip" / "core"
FORBIDDEN = {"asyncio", "socket", "time", "aiohttp", "rich", "selectors", "threading", "subprocess"}
#: The core may not reach out to the layers built on it either.
FORBIDDEN_PACKAGES = ("resip.aio", "resip.server", "resip.ui", "resip.lab", "resip_proxy")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MODULES = sorted(CORE.rglob("*.py"))


def test_the_core_has_modules() -> None:
    assert len(MODULES) > 20


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_no_io(path: Path) -> None:
    bad = sorted(
        name
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN_PACKAGES)
    )
    assert not bad, f"{path.relative_to(CORE.parent)} imports {bad}"
