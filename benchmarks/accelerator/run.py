"""Training where the accelerator is: per-stage seconds, test accuracy, peak accelerator memory and utilisation, for
each device x precision given, on two teachers distilled into the default student (L4-H256-I768):

- minilm: the default recipe as shipped (all-MiniLM-L6-v2 fine-tuned on VADER, then distilled: 2 epochs, logit KD);
- base:   a BERT-base-shaped teacher (12 layers x 768, 12 heads, FFN 3072, MiniLM's 30,522-token vocabulary) with
          RANDOM weights, fine-tuned on the same rows and then distilled with the default recipe's settings: its
          timings are those of a real BERT-base teacher; its accuracies mean nothing (no pre-training).

Stages are built through the library API (compress.finetune, STAGES["distill"]) on a StageContext whose placement
is compute.resolve(device, precision), exactly what `edgecompress run` does; no export, no onnxruntime, no
executorch (a lent GPU machine has neither in a usable version). Each stage's wall time includes its validation and
test passes and, for distill, the teacher-logits cache. Utilisation is sampled every 0.2 s in a thread
(torch.cuda.utilization through pynvml, else nvidia-smi), absent on CPU/MPS.

Reproduce (CPU here; 2 cores, 2 threads, OMP_WAIT_POLICY=PASSIVE):
    python benchmarks/accelerator/run.py --device cpu --precision fp32 --max-train-samples 256 \
        --max-eval-samples 256 --threads 2 --out results_cpu
On a lent GPU (see README.md: prepare here, then one call there):
    python benchmarks/accelerator/run.py --device cuda --precision fp32,bf16 --out results_gpu
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp (DESIGN.md: threads)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).parent
BASE_SHAPE = {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}


class UtilSampler:
    """Samples the GPU's busy percentage in a thread while a stage runs (max and mean)."""

    def __init__(self, device: str, period_s: float = 0.2):
        self.device, self.period_s = device, period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = None
        self.read = self._reader() if device.startswith("cuda") else None

    def _reader(self):
        import torch
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        try:
            torch.cuda.utilization(index)  # needs pynvml (nvidia-ml-py)
            return lambda: float(torch.cuda.utilization(index))
        except Exception:  # noqa: BLE001 - no pynvml: fall back to the CLI
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(index)]
        return lambda: float(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip())

    def _loop(self):
        while not self._stop.wait(self.period_s):
            try:
                self.samples.append(self.read())
            except Exception:  # noqa: BLE001 - a failed sample is a missing sample, not a failed benchmark
                pass

    def __enter__(self):
        if self.read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"util_max_pct": None, "util_mean_pct": None}
        return {"util_max_pct": max(self.samples), "util_mean_pct": round(sum(self.samples) / len(self.samples), 1)}


def teacher_dir(arg: str | None) -> Path:
    """The packaged MiniLM where the wheel is installed; /tmp/teacher on a lent GPU machine (.gpu/on-device.sh)."""
    if arg:
        return Path(arg)
    try:
        from edgecompress.model_dir import resolve_model_dir
        from edgecompress.recipe import PACKAGED_TEACHER
        return resolve_model_dir(PACKAGED_TEACHER)
    except Exception:  # noqa: BLE001 - the GPU machine has no packaged-teacher wheel
        return Path("/tmp/teacher")


def make_teacher(kind: str, tdir: Path, num_labels: int, seed: int):
    import torch
    from edgecompress.modeling import load_classifier
    torch.manual_seed(seed)
    if kind == "minilm":
        return load_classifier(tdir, num_labels)
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=num_labels, **BASE_SHAPE)
    return BertForSequenceClassification(cfg).eval()  # random weights: timing only


def timed(placement, fn) -> tuple[object, dict]:
    """Run fn() and measure it: wall seconds (after the device finished), peak memory, utilisation."""
    import torch
    from edgecompress.compute import synchronize
    cuda = placement.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(placement.device)
    with UtilSampler(placement.device) as util:
        t0 = time.perf_counter()
        out = fn()
        synchronize(placement)
        seconds = time.perf_counter() - t0
    m = {"seconds": round(seconds, 2), **util.summary(),
         "peak_accel_mem_mib": round(torch.cuda.max_memory_allocated(placement.device) / 2**20, 1) if cuda else None,
         "peak_accel_reserved_mib": round(torch.cuda.max_memory_reserved(placement.device) / 2**20, 1) if cuda else None,
         "peak_rss_mib_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return out, m


def warm_up(placement) -> None:
    """CUDA's first kernels pay context and cuBLAS set-up (~1 s); not a stage's cost."""
    import torch
    from edgecompress.compute import autocast, synchronize
    if placement.accelerated:
        x = torch.randn(256, 256, device=placement.device)
        with autocast(placement):
            (x @ x).sum().item()
        synchronize(placement)


def run_one(kind: str, device: str, precision: str, args, splits, tdir: Path) -> list[dict]:
    import torch
    from edgecompress.compress.base import StageContext, Teacher
    from edgecompress.compress.finetune import finetune
    from edgecompress.compute import ComputeCfg, resolve
    from edgecompress.data import num_labels
    from edgecompress.modeling import count_params, load_tokenizer
    from edgecompress.recipe import load_recipe
    from edgecompress.registry import STAGES
    import edgecompress.compress.distill  # noqa: F401 - registers the stage

    recipe = load_recipe(None)
    placement = resolve(ComputeCfg(device=device, precision=precision))
    warm_up(placement)
    ctx = StageContext(splits, recipe.data.max_seq_len, recipe.seed, placement)
    n = args.max_train_samples
    ft_cfg = recipe.teacher.finetune.model_copy(update={"max_train_samples": min(n or 10**9, 6000)})
    dcfg = recipe.stages[0]
    dcfg = dcfg.model_copy(update={"train": dcfg.train.model_copy(update={"max_train_samples": n})})
    tok = load_tokenizer(tdir)
    model = make_teacher(kind, tdir, num_labels(splits), recipe.seed)
    common = {"teacher": kind, "teacher_params": count_params(model), **placement.record(),
              "max_train_samples": n, "eval_samples": len(splits["test"]), "threads": torch.get_num_threads()}
    rows = []
    label = f"{kind} {placement.device} {placement.precision}"
    print(f"[{label}] fine-tune teacher ({ft_cfg.max_train_samples} rows)", flush=True)
    ft, m = timed(placement, lambda: finetune(model, tok, ft_cfg, ctx))
    rows.append({**common, "stage": "teacher-finetune", **m, "train_seconds": ft.metrics["train_seconds"],
                 "test_accuracy": ft.metrics["test_accuracy"], "val_accuracy": ft.metrics["val_accuracy"]})
    print(f"[{label}] distill into the default student", flush=True)
    torch.manual_seed(recipe.seed)
    res, m = timed(placement, lambda: STAGES.get("distill")(ft.model, tok, dcfg, ctx, Teacher(ft.model, tok)))
    rows.append({**common, "stage": "distill", **m, "train_seconds": res.metrics["train_seconds"],
                 "test_accuracy": res.metrics["test_accuracy"], "val_accuracy": res.metrics["val_accuracy"],
                 "student_params": res.metrics["params"]})
    for r in rows:
        print(f"  {r['stage']}: {r['seconds']} s, test acc {r['test_accuracy']:.4f}, "
              f"peak {r['peak_accel_mem_mib']} MiB, util max {r['util_max_pct']}%", flush=True)
    return rows


COLUMNS = ["teacher", "stage", "device", "precision", "device_name", "max_train_samples", "eval_samples", "threads",
           "seconds",
           "train_seconds", "test_accuracy", "peak_accel_mem_mib", "util_max_pct", "util_mean_pct"]


def to_markdown(rows: list[dict], env: dict) -> str:
    lines = [f"Environment: {json.dumps(env)}", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r.get(c) for c in COLUMNS]
        lines.append("| " + " | ".join("" if v is None else f"{v:.4f}" if isinstance(v, float) and v < 1 else str(v)
                                       for v in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="comma list: auto, cpu, cuda, cuda:N, mps")
    ap.add_argument("--precision", default="fp32", help="comma list: auto, fp32, bf16, fp16")
    ap.add_argument("--teachers", default="minilm,base", help="comma list of minilm, base")
    ap.add_argument("--max-train-samples", type=int, default=None,
                    help="train rows per stage (teacher fine-tune at most 6000, the default recipe's; None: as shipped)")
    ap.add_argument("--max-eval-samples", type=int, default=None,
                    help="validation and test rows (None: all 1,586 each); every epoch validates on them")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--teacher-dir", default=None, help="MiniLM folder (default: packaged, else /tmp/teacher)")
    ap.add_argument("--out", default="results", help="writes <out>.json and <out>.md beside this file")
    args = ap.parse_args()
    import torch
    import transformers
    from edgecompress.data import load_splits
    from edgecompress.recipe import DataCfg
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_splits(DataCfg())
    splits = {k: v if k == "train" else v.subset(args.max_eval_samples, 0) for k, v in splits.items()}
    tdir = teacher_dir(args.teacher_dir)
    env = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "machine": platform.machine()}
    rows: list[dict] = []
    out = HERE / args.out
    for kind in args.teachers.split(","):
        for device in args.device.split(","):
            for precision in args.precision.split(","):
                rows += run_one(kind, device, precision, args, splits, tdir)
                # Saved after every configuration: a run cut short by a time limit keeps what it finished.
                out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
                out.with_suffix(".md").write_text(to_markdown(rows, env))
    print(to_markdown(rows, env))


if __name__ == "__main__":
    from edgecompress.errors import UserInputError
    try:
        main()
    except UserInputError as e:  # e.g. --device cuda where there is none: one line, as the CLI says it
        raise SystemExit(f"benchmarks/accelerator: {e}") from None
