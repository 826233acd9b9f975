"""Running `edgecompress run` the way a user does: a recipe written to YAML, the CLI in a fresh process, a store of
the test's own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def run_recipe(tmp_path: Path, recipe: dict, *flags: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Write `recipe` to tmp_path/r.yaml and run it with --out tmp_path/runs and EDGECOMPRESS_HOME tmp_path/home."""
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return subprocess.run([sys.executable, "-m", "edgecompress", "run", str(tmp_path / "r.yaml"), "--out",
                           str(tmp_path / "runs"), *flags], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")})
