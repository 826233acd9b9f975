"""Adding a component is one declaration plus its module: a stage declared on its config class and a format declared
as a row are accepted by the recipe schema, the profile schema and `plan`, and appear in the step graph, without an
edit anywhere in edgecompress."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PLUGIN = '''
from typing import Literal

from edgecompress.compress.base import StageResult, register_stage
from edgecompress.export.base import Exporter, exporter
from edgecompress.formats import FormatSpec, declare_format
from edgecompress.recipe import StageConfig
from edgecompress.registry import stage


@stage("toy_plugin")
class ToyCfg(StageConfig):
    kind: Literal["toy"] = "toy"
    strength: float = 0.5


@register_stage("toy")
def toy(model, tokenizer, cfg, ctx, teacher):
    return StageResult(model, tokenizer, {"strength": cfg.strength})


declare_format(FormatSpec("toyfmt", ".toy", "toyrt", "", (), "toy_plugin", fixed_batch=False))


@exporter("toyfmt")
class ToyExporter(Exporter):
    def lower(self, job, module):
        return module

    def write(self, job, program, out):
        out.write_bytes(b"toy")

    def load(self, path, threads=1):
        raise NotImplementedError
'''

RECIPE = """
stages:
  - {kind: distill}
  - {kind: toy, strength: 0.7}
export: {formats: [onnx, toyfmt]}
profile: PROFILE
"""

PROFILE = """
name: toybox
arch: x86_64
os: linux
cores: {big: 2}
memory_mb: 4096
runtimes: {onnx: {}, toyfmt: {}}
budgets: {toyfmt-int8: {file_mb: 5}}
"""


def _plan(tmp_path, with_plugin: bool) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        {'import toy_plugin' if with_plugin else ''}
        from edgecompress.cli import main
        sys.exit(main(["plan", "{tmp_path / 'recipe.yaml'}", "--json"]))""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_toy_stage_and_a_toy_format_declared_once_are_planned(tmp_path):
    # setup
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    (tmp_path / "profile.yaml").write_text(PROFILE)
    (tmp_path / "recipe.yaml").write_text(RECIPE.replace("PROFILE", str(tmp_path / "profile.yaml")))
    # execute
    declared, undeclared = _plan(tmp_path, True), _plan(tmp_path, False)
    # assert
    assert declared.returncode == 0, declared.stderr
    nodes = {n["label"]: n for n in json.loads(declared.stdout)["graph"]}
    assert nodes["2-toy"]["step"] == "toy" and nodes["2-toy"]["config"]["stage"]["strength"] == 0.7
    assert nodes["2-toy"]["parents"] == ["1-distill"]
    assert nodes["toyfmt-int8"]["step"] == "export" and nodes["toyfmt-int8"]["parents"] == ["2-toy"]
    assert {"verify-toyfmt-int8", "bench-toyfmt-int8"} <= set(nodes)
    assert undeclared.returncode == 2 and "unknown stage kind 'toy'" in undeclared.stderr


def test_the_implementations_register_against_their_rows(tmp_path, monkeypatch):
    # setup
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    code = ("import toy_plugin\nfrom edgecompress.registry import STAGES, EXPORTERS\n"
            "print(STAGES.get('toy').starts_from_teacher, EXPORTERS.get('toyfmt').name, EXPORTERS.get('toyfmt')().suffix)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    # execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    # assert
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "toyfmt", ".toy"]
