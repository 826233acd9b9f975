"""The measured half of the support matrix (`python scripts/support_matrix.py --run`): every cell tried on the tiny
model of its family, the stage through the registry, then the exporter, `load()` of the written file in its own
runtime and parity against the torch model. support_matrix.py imports it only under --run or --from-json.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgecompress.errors import UserInputError  # noqa: E402
from edgecompress.families import FAMILY_NAMES  # noqa: E402
from edgecompress.formats import FORMAT_NAMES, PRECISIONS  # noqa: E402
from support_matrix import (COLUMNS, RUN_BEGIN, RUN_END, STAGE_NAMES, STAGES, cell_label, plan_hash,  # noqa: E402
                            plan_matrix, plan_section, quant_for)


# -- run ------------------------------------------------------------------------------------------------------------
SEQ = 64
FP32_ATOL, FP32_RTOL, INT8_MIN_SQNR_DB = 1e-3, 1e-3, 10.0
PARITY_TEXTS = 12


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:240]


class Zoo:
    """One tiny model folder per family (saved as a user's would be), loaded fresh for every stage."""

    def __init__(self, root: Path):
        from edgecompress.zoo import corpus_texts
        self.root, self.dirs, self.texts = root, {}, corpus_texts()

    def load(self, family: str):
        from transformers import AutoModelForSequenceClassification
        from edgecompress.modeling import load_tokenizer
        from edgecompress.zoo import save_family_model
        if family not in self.dirs:
            self.dirs[family] = save_family_model(family, self.root / family, self.texts)
        d = self.dirs[family]
        return (AutoModelForSequenceClassification.from_pretrained(str(d), local_files_only=True).eval(),
                load_tokenizer(d))


def run_stage(zoo: Zoo, family: str, stage: str, ctx):
    """The stage through the registry on fresh copies of the family's model: (result, seconds of the stage alone)."""
    from edgecompress.compress.base import Teacher
    from edgecompress.registry import STAGES as REGISTRY
    cfg = dict(STAGES)[stage]
    teacher, tok = zoo.load(family)
    model, _ = zoo.load(family)  # a stage may change its input in place; the teacher stays intact
    t0 = time.perf_counter()
    result = REGISTRY.get(cfg.kind)(model, tok, cfg, ctx, Teacher(teacher, tok))
    return result, round(time.perf_counter() - t0, 1)


def parity(model, tok, infer, texts: list[str], precision: str) -> tuple[bool, str]:
    """Batch-1 logits of real sentences (lengths other than the export shape) from the file vs the torch model."""
    import numpy as np
    import torch
    from edgecompress.export.parity import sqnr_db
    got, ref = [], []
    for t in texts:
        enc = tok([t], truncation=True, max_length=SEQ, return_tensors="np")
        x = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        got.append(np.asarray(infer(x), dtype=np.float32).reshape(1, -1))
        with torch.no_grad():
            ref.append(model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.float().numpy())
    got, ref = np.concatenate(got), np.concatenate(ref)
    if got.shape != ref.shape or not np.isfinite(got).all():
        return False, f"parity: logits {got.shape} (finite: {bool(np.isfinite(got).all())}), torch {ref.shape}"
    if precision == "fp32":
        err = float(np.max(np.abs(got - ref) - FP32_RTOL * np.abs(ref)))
        return err <= FP32_ATOL, f"max |diff| {float(np.max(np.abs(got - ref))):.2e}"
    s = sqnr_db(ref, got)
    return s >= INT8_MIN_SQNR_DB, f"SQNR {s:.1f} dB"


def run_export(result, fmt: str, precision: str, texts: list[str], tmp: Path) -> dict:
    from edgecompress.export.base import IOSpec
    from edgecompress.registry import EXPORTERS
    tok = result.tokenizer
    io = IOSpec(vocab_size=len(tok), num_labels=2, max_seq_len=SEQ, pad_token_id=tok.pad_token_id)
    t0 = time.perf_counter()
    try:
        exporter = EXPORTERS.get(fmt)(batch=1)
        out = exporter.export(result.model, io, quant_for(precision), None, tmp)
        infer = exporter.load(out.file)
        ok, detail = parity(result.model, tok, infer, texts, precision)
        status = "pass" if ok else "fail"
        if not ok:
            detail = f"parity: {detail} (limit: " + (f"{FP32_ATOL} + {FP32_RTOL} |ref|)" if precision == "fp32"
                                                      else f">= {INT8_MIN_SQNR_DB} dB)")
    except UserInputError as e:
        status, detail = "refused", first_line(e)
    except Exception as e:  # noqa: BLE001 - a failing cell is a result, the others still run
        status, detail = "fail", first_line(e)
    return {"status": status, "detail": detail, "s": round(time.perf_counter() - t0, 1)}


def run_matrix(families, stages, formats, precisions, json_path: Optional[Path], resume: bool,
               budget_s: float) -> dict:
    import tempfile
    import torch
    import transformers
    from edgecompress.compress.base import StageContext
    from edgecompress.zoo import small_vader

    torch.set_num_threads(1)
    res = {"cells": {}, "stages": {}}
    if resume and json_path and json_path.exists():
        res = json.loads(json_path.read_text())
    passes = res.get("meta", {}).get("passes", [])
    res["meta"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                   "machine": f"{os.uname().machine}, {os.cpu_count()} cores", "torch_threads": 1,
                   "date": time.strftime("%Y-%m-%d"), "plan_hash": plan_hash(plan_section()), "passes": passes}
    this = {"families": list(families), "stages": list(stages), "formats": [f for f in FORMAT_NAMES if f in formats],
            "precisions": [p for p in PRECISIONS if p in precisions],
            "budget_s": None if budget_s == float("inf") else budget_s, "plan_hash": res["meta"]["plan_hash"]}
    passes.append(this)
    splits = small_vader(n_train=160, n_eval=64)
    ctx = StageContext(splits, SEQ)
    texts = splits["test"].texts[:PARITY_TEXTS]
    started = time.perf_counter()

    def save():
        if json_path:
            json_path.write_text(json.dumps(res, indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="support-matrix.") as tmp:
        zoo = Zoo(Path(tmp))
        for fam in families:
            for st in stages:
                todo = [(f, p) for f, p in COLUMNS
                        if f in formats and p in precisions and f"{fam}|{st}|{f}|{p}" not in res["cells"]]
                if not todo or time.perf_counter() - started > budget_s:
                    continue
                try:
                    result, secs = run_stage(zoo, fam, st, ctx)
                    stage = {"status": "pass", "detail": "", "s": secs}
                except UserInputError as e:
                    result, stage = None, {"status": "refused", "detail": first_line(e)}
                except Exception as e:  # noqa: BLE001
                    result, stage = None, {"status": "fail", "detail": first_line(e)}
                res["stages"][f"{fam}|{st}"] = stage
                for f, p in todo:
                    if time.perf_counter() - started > budget_s:
                        break
                    if result is None:
                        cell = {"status": f"stage {stage['status']}", "detail": stage["detail"]}
                    else:
                        cell = run_export(result, f, p, texts, Path(tmp) / f"{fam}-{f}-{p}".replace(" ", "_"))
                    res["cells"][f"{fam}|{st}|{f}|{p}"] = cell
                    print(f"{fam} | {st} | {f} {p}: {cell['status']} {cell.get('s', '')} {cell['detail']}",
                          flush=True)
                save()
                del result
    this["wall_s"] = round(time.perf_counter() - started, 1)
    save()
    return res


def _pass_text(p: dict) -> str:
    def some(got, every):
        return "all" if set(got) >= set(every) else ", ".join(got)
    return (f"{some(p['formats'], FORMAT_NAMES)} formats x {some(p['precisions'], PRECISIONS)} precisions x "
            f"{some(p['stages'], STAGE_NAMES)} stages x {some(p['families'], FAMILY_NAMES)} families in "
            f"{p.get('wall_s', '?')} s" + (f" (budget {p['budget_s']:g} s)" if p.get("budget_s") else "")
            + (f" against plan `{p['plan_hash']}`" if p.get("plan_hash") else ""))


def run_section(res: dict) -> str:
    """The measured part of the doc, from a run's results."""
    meta, cells, stages = res["meta"], res["cells"], res["stages"]
    plan = {(c.family, c.stage, c.fmt, c.precision): c for c in plan_matrix()}
    keys: dict[str, str] = {}
    counts = {"agree: accepted and passes": 0, "agree: refused and refused at run time": 0,
              "GAP: accepted by plan, fails at run time": [], "plan refuses, but it runs": [],
              "not run": 0}
    out = [RUN_BEGIN, "", "## What the code does (`--run`)", "",
           f"Measured {meta['date']} against plan `{meta['plan_hash']}`; {meta['machine']}, torch {meta['torch']}, "
           f"transformers {meta['transformers']}, {meta['torch_threads']} torch thread. Passes: "
           + "; ".join(_pass_text(p) for p in meta["passes"]) + ". Each cell: the stage (registry) on the "
           "family's tiny zoo model, the exporter, `load()` of the file in its runtime, and parity with the torch "
           f"model on {PARITY_TEXTS} test sentences at batch 1 (fp32 |diff| <= {FP32_ATOL} + {FP32_RTOL} |ref|, int8 "
           f"SQNR >= {INT8_MIN_SQNR_DB:g} dB). `pass`; `Fn`: failed, first line below; `refused`: a one-line "
           "UserInputError at run time (`stage refused`: by the stage, so no export was tried); `plan ok, not run` / "
           "`plan refuses, not run`: not tried in this run (see Passes), with what plan says of it.", "",
           "| family | stage | stage s | " + " | ".join(cell_label(f, p) for f, p in COLUMNS) + " |",
           "|---|---|---|" + "---|" * len(COLUMNS)]
    for fam in FAMILY_NAMES:
        for st in STAGE_NAMES:
            sg = stages.get(f"{fam}|{st}")
            s_txt = "-" if sg is None else (f"{sg['s']}" if sg["status"] == "pass" else sg["status"])
            vals = []
            for f, p in COLUMNS:
                c, pc = cells.get(f"{fam}|{st}|{f}|{p}"), plan[fam, st, f, p]
                if c is None:
                    vals.append("plan ok, not run" if pc.ok else "plan refuses, not run")
                    counts["not run"] += 1
                    continue
                ran_ok, refused = c["status"] == "pass", c["status"] in ("refused", "stage refused")
                if ran_ok and pc.ok or refused and not pc.ok:
                    counts["agree: accepted and passes" if pc.ok else "agree: refused and refused at run time"] += 1
                elif pc.ok:
                    counts["GAP: accepted by plan, fails at run time"].append(f"{fam} / {st} / {f} {p}")
                elif ran_ok:
                    counts["plan refuses, but it runs"].append(f"{fam} / {st} / {f} {p}")
                if ran_ok:
                    vals.append("pass")
                elif refused:
                    vals.append(c["status"])
                else:
                    k = keys.setdefault(c["detail"], f"F{len(keys) + 1}")
                    vals.append(k if c["status"] == "fail" else f"{c['status']} {k}")
            out.append(f"| {fam} | {st} | {s_txt} | " + " | ".join(vals) + " |")
    out += ["", "Failures (first line of the error):", ""]
    out += [f"- **{k}**: {d}" for d, k in keys.items()] or ["- (none)"]
    out += ["", "Plan vs run:", ""]
    for name, v in counts.items():
        out.append(f"- {name}: {v if isinstance(v, int) else len(v)}" + (
            f" ({'; '.join(v)})" if isinstance(v, list) and v else ""))
    secs: dict[str, list[float]] = {}
    for k, c in cells.items():
        if "s" in c and c["status"] == "pass":
            secs.setdefault(k.split("|", 2)[2].replace("|", " "), []).append(c["s"])
    if secs:
        out += ["", "Seconds per passing export (export + load + parity), median / max: " + "; ".join(
            f"{k} {sorted(v)[len(v) // 2]} / {max(v)}" for k, v in secs.items()) + "."]
    out += ["", RUN_END]
    return "\n".join(out) + "\n"
