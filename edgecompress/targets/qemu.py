"""qemu-arm64 transport: an emulated Raspberry Pi CPU on an x86_64 host (qemu-user + an arm64 Debian rootfs).

Int8 kernels differ by architecture (onnxruntime's u8s8 NEON GEMMs vs x86 VNNI/AVX2, XNNPACK's ARM paths), so
an artifact that agrees with torch on x86 can still disagree on a Pi. Until a board is attached, this target
runs the same bench agent on the arm64 wheels of the runtimes, emulated instruction by instruction.

How it runs (docs/qemu-arm64.md has the long form):
- The rootfs (targets/qemu-arm64/build_rootfs.sh, cached in ~/.cache/edgecompress/qemu-arm64-rootfs) holds an
  arm64 python3 and the aarch64 wheels. The device workdir is a fresh directory under ROOTFS/tmp.
- exec runs argv on the HOST with the workdir as cwd (the "device shell" is the host's sh: it only changes
  directory), and `self.python` is a launcher that starts ROOTFS's arm64 python under
  `qemu-aarch64-static -cpu cortex-a72 -L ROOTFS`. Only the agent is emulated; no binfmt_misc registration and
  no chroot are needed (a container rarely allows either, and binfmt changes the whole host).
- The agent gets EDGECOMPRESS_EMULATOR in its environment and reports "emulated": true with it. Latency under
  qemu is NOT a device figure (emulation is 10-50x slower and its relative costs differ); labels are.
"""
from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from edgecompress.registry import TRANSPORTS
from edgecompress.targets.base import ExecResult, Transport, _Cfg, run_local
from edgecompress.targets.local import copy_into, copy_out_of

KIND = "qemu-arm64"
DEFAULT_ROOTFS = "~/.cache/edgecompress/qemu-arm64-rootfs"
STAMP = ".edgecompress-rootfs-stamp"
LAUNCHER = ".edgecompress-python"


def build_script() -> Path:
    """The rootfs build script as shipped (edgecompress/resources/targets -> top-level targets/)."""
    import importlib.resources
    return Path(str(importlib.resources.files("edgecompress") / "resources" / "targets" / "qemu-arm64"
                    / "build_rootfs.sh"))


def build_command() -> str:
    return f"sudo bash {build_script()}"


class QemuReach(_Cfg):
    kind: Literal["qemu-arm64"] = KIND
    rootfs: Optional[str] = Field(None, description=f"default: $EDGECOMPRESS_QEMU_ROOTFS or {DEFAULT_ROOTFS}")
    # Cortex-A72 = Raspberry Pi 4: ARMv8.0 NEON, no sdot/udot, so onnxruntime takes its plain u8s8 NEON kernels as
    # on the board. qemu's default "max" CPU has dot-product and i8mm: other kernels, other rounding.
    cpu: str = Field("cortex-a72", pattern=r"^[A-Za-z0-9_.-]+$", description="qemu -cpu model, e.g. cortex-a76 (Pi 5)")
    qemu: str = Field("qemu-aarch64-static", description="the qemu-user binary")
    python: str = Field("/usr/bin/python3", description="interpreter path inside the rootfs")


def rootfs_path(reach: Optional[QemuReach] = None) -> Path:
    raw = (reach.rootfs if reach is not None else None) or os.environ.get("EDGECOMPRESS_QEMU_ROOTFS") or DEFAULT_ROOTFS
    return Path(raw).expanduser()


def rootfs_problem(reach: Optional[QemuReach] = None) -> Optional[str]:
    """Why this target cannot run yet (one line naming the fix), or None when it can."""
    reach = reach or QemuReach()
    root = rootfs_path(reach)
    if not (root / STAMP).is_file():
        return f"qemu-arm64 rootfs not built at {root}: run `{build_command()}` (about a minute, see docs/qemu-arm64.md)"
    if shutil.which(reach.qemu) is None:
        return f"{reach.qemu} not found: apt-get install qemu-user-static"
    return None


@TRANSPORTS.register(KIND)
class QemuArm64Transport(Transport):
    kind = KIND

    def __init__(self, reach: Optional[QemuReach] = None):
        self.reach = reach or QemuReach()
        self.rootfs = rootfs_path(self.reach)
        self._workdir: Optional[str] = None
        self._problem: Optional[str] = None

    def _ensure_workdir(self) -> Optional[ExecResult]:
        if self._workdir is not None:
            return None
        t0 = time.perf_counter()
        self._problem = rootfs_problem(self.reach)
        if self._problem is None:
            try:
                self._workdir = tempfile.mkdtemp(prefix="edgecompress-", dir=self.rootfs / "tmp")
                self._write_launcher(Path(self._workdir) / LAUNCHER)
            except OSError as e:
                self._problem = f"cannot create a workdir in {self.rootfs / 'tmp'}: {e}"
                self.cleanup()
        if self._problem is not None:
            return ExecResult(1, "", self._problem, time.perf_counter() - t0)
        return None

    def _write_launcher(self, path: Path) -> None:
        # A fixed two-line script, every path quoted: argv from callers never passes through a shell string.
        # -I: isolated mode, so no PYTHONPATH/user site of the host leaks x86 packages into the arm64 python.
        guest_python = str(self.rootfs) + "/" + self.reach.python.lstrip("/")
        argv = [self.reach.qemu, "-cpu", self.reach.cpu, "-L", str(self.rootfs), guest_python, "-I"]
        path.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n')
        path.chmod(0o755)

    # ---------------------------------------------------------------- interface

    @property
    def python(self) -> str:
        """The launcher (host path) that runs the rootfs's arm64 python under qemu."""
        self._ensure_workdir()
        return str(Path(self._workdir) / LAUNCHER) if self._workdir else self.reach.python

    def emulator(self) -> str:
        return f"{Path(self.reach.qemu).name} -cpu {self.reach.cpu}"

    def describe(self) -> str:
        return f"{KIND} (emulated {self.reach.cpu}, {self.rootfs})"

    def push(self, local_path: Path, remote_rel: str) -> ExecResult:
        return self._ensure_workdir() or copy_into(self._workdir, local_path, remote_rel)

    def env(self) -> dict[str, str]:
        """A clean environment: host PATH (to find sh and qemu), no PYTHON*/LD_* of the host."""
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": "/root", "LANG": "C.UTF-8",
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
               "EDGECOMPRESS_EMULATOR": self.emulator()}
        for k in ("OMP_NUM_THREADS", "TMPDIR"):
            if k in os.environ:
                env[k] = os.environ[k]
        return env

    def exec(self, argv: list[str], timeout_s: float) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        return run_local(list(argv), timeout_s, cwd=self._workdir, env=self.env())

    def pull(self, remote_rel: str, local_path: Path) -> ExecResult:
        return self._ensure_workdir() or copy_out_of(self._workdir, remote_rel, local_path)

    def cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def parse_qemu_target(url: str) -> QemuReach:
    """`qemu-arm64[?cpu=cortex-a76&rootfs=/path&qemu=...&python=...]` -> QemuReach (base.parse_target calls this)."""
    import urllib.parse

    from pydantic import ValidationError

    from edgecompress.errors import UserInputError
    _, _, query = url.partition("?")
    fields = dict(urllib.parse.parse_qsl(query))
    unknown = set(fields) - {"rootfs", "cpu", "qemu", "python"}
    if unknown:
        raise UserInputError(f"target {url!r}: unknown option(s) {sorted(unknown)}; known: cpu, python, qemu, rootfs")
    try:
        return QemuReach(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        raise UserInputError(f"target {url!r}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None


# ---------------------------------------------------------------- labels on the target

def predict_on_target(transport: Transport, model_file: Path, io_json: Path, runtime: str, samples: list[dict],
                      *, threads: int = 1, timeout_s: float = 3600, extra_files=()) -> dict:
    """Run the agent once over `samples` ({input_name: [[ids]]} each) with --predict; returns its JSON dict.

    On success the dict has "predictions": the argmax of every output row, in sample order, and "logits".
    A failure is {"ok": False, "error": ...} like bench_file's.
    """
    import json

    from edgecompress.bench.harness import AGENT_NAME, _failure, agent_path, onnx_sidecars, parse_agent_output
    t0 = time.perf_counter()
    model_file, io_json = Path(model_file), Path(io_json)
    sidecars = list(extra_files) or onnx_sidecars(model_file)
    with tempfile.TemporaryDirectory(prefix="edgecompress-predict-") as tmp:
        inputs = Path(tmp) / "inputs.json"
        inputs.write_text(json.dumps(samples, separators=(",", ":")))
        run_dir = f"predict{os.getpid()}-{int(time.time() * 1e3) % 10**8}"
        pushes = [(agent_path(), AGENT_NAME), (model_file, model_file.name), (io_json, "io.json"), (inputs, "inputs.json")]
        pushes += [(Path(p), Path(p).name) for p in sidecars]
        for local, rel in pushes:
            res = transport.push(local, f"{run_dir}/{rel}")
            if not res.ok:
                return _failure(f"push {local.name} to {transport.describe()} failed: {res.stderr_tail(3)}", res,
                                transport, "push" if transport.has_workdir() else "connect", t0)
    args = ["--model", model_file.name, "--io", "io.json", "--runtime", runtime, "--threads", str(threads),
            "--inputs", "inputs.json", "--predict", "--warmup-runs", "0", "--runs", "1"]
    for p in sidecars:
        args += ["--extra-file", Path(p).name]
    res = transport.exec(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", run_dir, transport.python, AGENT_NAME,
                          *args], timeout_s)
    data = parse_agent_output(res.stdout)
    if res.timed_out or data is None or not data.get("ok") or res.returncode != 0:
        why = (f"agent timed out after {timeout_s:g} s" if res.timed_out else
               str((data or {}).get("error") or f"agent printed no JSON (exit {res.returncode}): {res.stderr_tail(3)}"))
        return _failure(why, res, transport, "exec" if data is None else "agent", t0)
    data.update(transport=transport.describe(), wall_s=round(time.perf_counter() - t0, 3))
    return data


def label_agreement(a: list[int], b: list[int]) -> float:
    if len(a) != len(b) or not a:
        raise ValueError(f"cannot compare {len(a)} labels with {len(b)}")
    return sum(x == y for x, y in zip(a, b)) / len(a)


# ---------------------------------------------------------------- label agreement on the test split

def tokenized_samples(tokenizer, texts: list[str], io: dict) -> list[dict]:
    """One batch-of-one sample per text, unpadded (the true length: no [PAD] rows to emulate), truncated to the
    exported sequence bound."""
    enc = tokenizer(list(texts), truncation=True, max_length=int(io["max_seq_len"]), padding=False)
    return [{n: [list(enc[n][i]) if n in enc else [0] * len(enc["input_ids"][i])] for n in io["input_names"]}
            for i in range(len(texts))]


def verify_labels(model_file: Path, io_json: Path, runtime: str, model_dir: Optional[Path], transport: Transport,
                  *, threads: int = 1, limit: Optional[int] = None, timeout_s: float = 3600) -> dict:
    """Predict the packaged test split on `transport` and on this host; report label agreement.

    Compared with: the same file in the same runtime on the host ("host_runtime"), the torch model the file was
    exported from when model_dir holds one ("host_torch"), and the gold labels (accuracy).
    """
    import json

    import numpy as np

    from edgecompress.data import load_splits
    from edgecompress.modeling import load_tokenizer
    from edgecompress.recipe import DataCfg
    io = json.loads(Path(io_json).read_text())
    test = load_splits(DataCfg())["test"]
    texts, gold = list(test.texts), [int(x) for x in test.labels]
    if limit:
        texts, gold = texts[:limit], gold[:limit]
    tokenizer = load_tokenizer(Path(model_dir)) if model_dir else None
    if tokenizer is None:
        raise ValueError("verify_labels needs the model folder (its tokenizer made the ids the file expects)")
    samples = tokenized_samples(tokenizer, texts, io)

    t0 = time.perf_counter()
    target = predict_on_target(transport, Path(model_file), Path(io_json), runtime, samples, threads=threads,
                               timeout_s=timeout_s)
    target_s = time.perf_counter() - t0
    if not target.get("ok"):
        return {"ok": False, "error": target.get("error"), "target": target}
    preds = target["predictions"]

    from edgecompress.registry import EXPORTERS
    fmt = {"onnxruntime": "onnx", "executorch": "pte", "lite_interpreter": "ptl"}[runtime]
    infer = EXPORTERS.get(fmt)().load(Path(model_file), threads=threads)
    host_logits = [np.asarray(infer({k: np.asarray(v, dtype=np.int64) for k, v in s.items()
                                     if k in ("input_ids", "attention_mask")}))[0] for s in samples]
    host = [int(np.argmax(r)) for r in host_logits]
    out = {"ok": True, "n": len(samples), "runtime": runtime, "machine": target.get("machine"),
           "emulated": target.get("emulated"), "emulator": target.get("emulator"),
           "runtime_version": target.get("runtime_version"), "transport": target.get("transport"),
           "agreement_host_runtime": round(label_agreement(preds, host), 4),
           "max_abs_logit_diff_host_runtime": round(float(max(np.max(np.abs(np.asarray(a) - b))
                                                            for a, b in zip(target["logits"], host_logits))), 6),
           "accuracy_target": round(label_agreement(preds, gold), 4),
           "accuracy_host_runtime": round(label_agreement(host, gold), 4),
           "target_s": round(target_s, 1), "target_predict_s": target.get("predict_s")}
    if (Path(model_dir) / "config.json").is_file():
        import torch

        from edgecompress.modeling import load_classifier
        model = load_classifier(Path(model_dir), int(io["num_labels"])).eval()
        with torch.no_grad():
            ref = [int(model(input_ids=torch.tensor(s["input_ids"]),
                             attention_mask=torch.tensor(s["attention_mask"])).logits.argmax(-1)[0]) for s in samples]
        out.update(agreement_host_torch=round(label_agreement(preds, ref), 4),
                   host_torch_vs_host_runtime=round(label_agreement(host, ref), 4),
                   accuracy_host_torch=round(label_agreement(ref, gold), 4))
    return out


def artifact_paths(artifact_dir: Path) -> tuple[Path, Path, str, Optional[Path]]:
    """(model file, io.json, runtime, parent model folder) of an export artifact, read from its manifest.json."""
    import json

    from edgecompress.errors import UserInputError
    d = Path(artifact_dir)
    manifest = json.loads((d / "manifest.json").read_text())
    fmt = (manifest.get("config") or {}).get("format")
    runtime = {"onnx": "onnxruntime", "pte": "executorch", "ptl": "lite_interpreter"}.get(fmt)
    model = [d / rel for rel in manifest.get("files", {}) if rel.endswith(f".{fmt}")]
    if runtime is None or len(model) != 1:
        raise UserInputError(f"{d}: not an export artifact with one .{fmt} file")
    parent = None
    for pid in manifest.get("parents") or []:
        found = [p / "model" for p in d.parent.glob(f"*-{pid}") if (p / "model").is_dir()]
        parent = found[0] if found else parent
    return model[0], d / "io.json", runtime, parent


def verify_command(args) -> int:
    """`edgecompress verify ARTIFACT [--target qemu-arm64] [--limit N]`: label agreement of an export artifact on a
    target (default: the emulated arm64 CPU) vs this host, over the packaged test split; one JSON object on stdout.
    Exit 0 when agreement >= --min-agreement, 1 below it, 3 when the target failed."""
    import json
    from edgecompress.targets.base import make_transport, parse_target
    model, io, runtime, parent = artifact_paths(args.artifact)
    with make_transport(parse_target(args.target)) as t:
        res = verify_labels(model, io, runtime, parent, t, threads=args.threads, limit=args.limit)
    print(json.dumps(res, indent=2))
    if not res.get("ok"):
        return 3
    return 0 if res["agreement_host_runtime"] >= args.min_agreement else 1
