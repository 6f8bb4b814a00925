"""Nothing the suite promises can skip in CI.

Every skip in tests/ (pytest.skip, skipif, importorskip, xfail, unittest's SkipTest) sits in a function that
first turns it into a failure when a TUNELAB_REQUIRE_* variable is 1, and .ci/run sets that variable; or it is
listed in CANNOT_HAPPEN_IN_CI with the reason. CI runs every test: neither pyproject's addopts nor .ci/run
deselects any (the slow ones included).
"""

import ast
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_NAMES = {"skip", "skipif", "importorskip", "xfail", "SkipTest"}
REQUIRE = re.compile(r"^TUNELAB_REQUIRE_[A-Z_]+$")
DESELECTING = ("-m", "-k", "--deselect", "--ignore", "--ignore-glob", "--lf", "--last-failed", "-x", "--exitfirst")
# "file.py::function": why that skip cannot happen on CI's machine (root, apt-get, mount). None today.
CANNOT_HAPPEN_IN_CI: dict[str, str] = {}


def ci_required_variables() -> set[str]:
    """The TUNELAB_REQUIRE_* variables .ci/run exports as 1."""
    words = [word for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("export ")
             for word in shlex.split(line)[1:]]
    return {word.split("=")[0] for word in words if REQUIRE.match(word.split("=")[0]) and word.endswith("=1")}


def skip_sites(source: str) -> list[tuple[int, str, ast.AST | None]]:
    """(line, name, enclosing function or None) of every skip in a test file's source."""
    tree = ast.parse(source)
    enclosing = {}  # node -> innermost function around it (ast.walk reaches outer functions first)
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            enclosing.update((node, function) for node in ast.walk(function) if node is not function)
    sites = []
    for node in ast.walk(tree):
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if name in SKIP_NAMES:
            sites.append((node.lineno, name, enclosing.get(node)))
    return sites


def guard(function: ast.AST | None) -> str | None:
    """The TUNELAB_REQUIRE_* variable of an `if` in `function` that checks it and calls pytest.fail."""
    for node in ast.walk(function) if function else ():
        if not isinstance(node, ast.If):
            continue
        names = [c.value for c in ast.walk(node.test) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        fails = any(isinstance(c, ast.Attribute) and c.attr == "fail" for b in node.body for c in ast.walk(b))
        variable = next((name for name in names if REQUIRE.match(name)), None)
        if variable and fails:
            return variable
    return None


def unguarded_skips(source: str, filename: str, required: set[str]) -> list[str]:
    """Each skip in `source` that CI could see skip, as 'file:line name in function: why'."""
    problems = []
    for line, name, function in skip_sites(source):
        where = f"{filename}::{function.name if function else '<module>'}"
        if where in CANNOT_HAPPEN_IN_CI:
            continue
        variable = guard(function) if name == "skip" else None
        if variable is None:
            problems.append(f"{filename}:{line} {name} in {where}: no TUNELAB_REQUIRE_* variable turns it into a "
                            "failure (guard it as tests/test_faults.py's small_disk does, and export it in .ci/run)")
        elif variable not in required:
            problems.append(f"{filename}:{line} {name} in {where}: .ci/run does not export {variable}=1")
    return problems


def test_every_skip_in_the_suite_fails_in_ci_instead():
    required = ci_required_variables()
    assert {"TUNELAB_REQUIRE_SLURM", "TUNELAB_REQUIRE_BROWSER", "TUNELAB_REQUIRE_MOUNT"} <= required
    files = sorted((ROOT / "tests").rglob("*.py"))
    sites = {str(path.relative_to(ROOT / "tests")): skip_sites(path.read_text()) for path in files}
    assert sum(map(len, sites.values())) >= 3, "the Slurm, browser and tmpfs skips are found"
    problems = [problem for path in files
                for problem in unguarded_skips(path.read_text(), str(path.relative_to(ROOT / "tests")), required)]
    assert problems == []


def test_an_unguarded_skip_is_found():
    required = {"TUNELAB_REQUIRE_SLURM"}
    guarded = ('import os, pytest\ndef unavailable(reason):\n    if os.environ.get("TUNELAB_REQUIRE_SLURM") == "1":\n'
               '        pytest.fail(reason)\n    pytest.skip(reason)\n')
    assert unguarded_skips(guarded, "guarded.py", required) == []
    assert unguarded_skips(guarded, "guarded.py", set()) == [
        "guarded.py:5 skip in guarded.py::unavailable: .ci/run does not export TUNELAB_REQUIRE_SLURM=1"]
    for source in ('import pytest\ndef test_x():\n    if not have_x():\n        pytest.skip("no x")\n',
                   'import pytest\n@pytest.mark.skipif(True, reason="r")\ndef test_x():\n    pass\n',
                   'import pytest\ntorch = pytest.importorskip("torch")\n',
                   'from pytest import skip\ndef test_x():\n    skip("no x")\n',
                   'import pytest\n@pytest.mark.xfail\ndef test_x():\n    pass\n'):
        [problem] = unguarded_skips(source, "new.py", required)
        assert "no TUNELAB_REQUIRE_* variable turns it into a failure" in problem, source


def test_ci_runs_every_test_slow_ones_included(pytestconfig):
    [pytest_line] = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    for words in (pytestconfig.getini("addopts"), shlex.split(pytest_line.split("pytest", 1)[1])):
        assert not [word for word in words if word.split("=")[0] in DESELECTING], words
