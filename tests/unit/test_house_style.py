"""The house rules that a reader can check mechanically: modules under 400 lines and functions under 80 everywhere
in the repository (package, scripts, benchmarks, tests), and the layers of docs/architecture.md (import-linter)."""
from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _python_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not any(part.startswith(".") or part in ("build", "runs") for part in p.relative_to(ROOT).parts))


def _too_long(path: Path) -> list[str]:
    src = path.read_text(encoding="utf-8")
    name = path.relative_to(ROOT) if ROOT in path.parents else path.name
    out = [f"{name}: {src.count(chr(10))} lines"] if src.count("\n") > MAX_MODULE_LINES else []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{name}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_module_over_400_lines_and_no_function_over_80():
    # execute
    offenders = [o for p in _python_files() for o in _too_long(p)]
    # assert
    assert offenders == []


def test_the_checker_sees_a_long_function_and_a_long_module(tmp_path):
    # setup: a 90-line method in a 450-line module
    f = tmp_path / "long.py"
    f.write_text("class A:\n    def f(self):\n" + "        x = 1\n" * 89 + "y = 2\n" * 360)
    # execute
    found = _too_long(f)
    # assert
    assert found == ["long.py: 451 lines", "long.py:2 f: 90 lines"]


def test_imports_keep_the_layers_of_the_architecture_page():
    # setup
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    # execute
    proc = subprocess.run([lint, str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    # assert
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_every_module_has_a_layer_and_the_architecture_page_names_it():
    # setup
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    layered = {m.strip() for line in cfg["importlinter:contract:layers"]["layers"].splitlines()
               for m in line.split(":") if m.strip()}
    page = (ROOT / "docs" / "architecture.md").read_text()
    # execute
    top = {p.stem if p.is_file() else p.name for p in (ROOT / "edgecompress").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    # assert: a module outside every layer would escape the contract
    unlayered = {t for t in top if f"edgecompress.{t}" not in layered
                 and not any(m.startswith(f"edgecompress.{t}.") for m in layered)}
    assert unlayered == set()
    assert {t for t in top if f"`{t}" not in page and f"{t}/" not in page and f"`{t}.py`" not in page} == set()
