"""The import graph: commands sit on top. Nothing outside the command modules (tunelab.launch, tunelab.cli)
imports tunelab.launch, and nothing on the run path imports the test builders (tunelab.tiny_models)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tunelab"
COMMANDS = ("tunelab.launch", "tunelab.cli")
# tiny_models builds random-weight models for the tests and `tunelab bench`, never for a run.
TEST_BUILDER_USERS = ("tunelab.tiny_models", "tunelab.bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def importers_of(target: str, allowed: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name.startswith(allowed) or "packaged" in path.parts:
            continue
        if any(imported == target or imported.startswith(target + ".") for imported in imports(path)):
            found.append(name)
    return found


def test_no_module_below_the_commands_imports_launch():
    assert importers_of("tunelab.launch", COMMANDS) == []


def test_the_run_path_does_not_import_the_test_builders():
    assert importers_of("tunelab.tiny_models", TEST_BUILDER_USERS) == []
