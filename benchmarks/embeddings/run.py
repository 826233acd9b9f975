"""Sentence-embedding benchmark: the embed recipes run through `edgecompress run`, one row per exported file.

Each recipe is run as a user would (`python -m edgecompress run RECIPE --out OUT`); the table is read from the
run's report.json: recall@10 of the teacher's ten nearest held-out VADER test sentences among the file's ten,
cosine to the teacher, leave-one-out kNN@10 sentiment and domain accuracy as a share of the teacher's own, p50 (batch
1, seq 128, 1 thread), speed-up and size against the fp32 teacher ONNX of the same run.

    python benchmarks/embeddings/run.py                        # recipes/embed.yaml cold, the peer beside it
    python benchmarks/embeddings/run.py --ladder               # + the earlier 3-layer recipes of this folder
    python benchmarks/embeddings/run.py --collect OUT/embed    # only read finished run folders

Each recipe runs cold: a fresh $EDGECOMPRESS_HOME (the native runner's one-time build linked in), so run_seconds is
what a first run on this machine takes. Then peer.py judges sentence-transformers' own dynamic-int8 export of the
same teacher beside the run's teacher-onnx-int8 and onnx-int8 files (peer_results.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parents[1] / "edgecompress" / "recipes" / "embed.yaml"
LADDER = [HERE / "embed_reduced.yaml", HERE / "embed_reduced_matched.yaml", HERE / "embed_full_nomatch.yaml",
          HERE / "embed_aug_4bit.yaml"]


def run(recipe: Path, out: Path) -> Path:
    import yaml
    from edgecompress.paths import native_dir
    home = out / f"home-{recipe.stem}"
    home.mkdir(parents=True)
    if native_dir().exists():
        (home / "native").symlink_to(native_dir())
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "EDGECOMPRESS_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "edgecompress", "run", str(recipe), "--out", str(out), "--quiet"],
                   check=False, env=env)
    return out / yaml.safe_load(recipe.read_text())["name"]


def rows(run_dir: Path) -> list[dict]:
    rep = json.loads((run_dir / "report.json").read_text())
    base = next(r for r in rep["rows"] if r["label"] == "teacher-onnx-fp32")
    share = lambda r, k: r[k] / r[f"teacher_{k}"] if r.get(k) is not None else None  # noqa: E731
    return [{"run": rep["recipe"]["name"], "file": r["label"], "recall_at_10": r["recall_at_10"],
             "index_int8_recall_at_10": r.get("index_int8_recall_at_10"),
             "index_binary_rescored_recall_at_10": r.get("index_binary_rescored_recall_at_10"),
             "cosine_to_teacher": r.get("cosine_to_teacher_mean"), "knn_label": r.get("knn_label_accuracy"),
             "knn_label_vs_teacher": share(r, "knn_label_accuracy"), "knn_domain": r.get("knn_domain_accuracy"),
             "knn_domain_vs_teacher": share(r, "knn_domain_accuracy"), "p50_ms": r["p50_ms"],
             "speedup": base["p50_ms"] / r["p50_ms"], "file_mb": r["file_mb"],
             "smaller": base["file_mb"] / r["file_mb"], "peak_rss_mb": r["peak_rss_mb"],
             "agreeing_with_torch": r.get("vector_agreement_vs_torch"), "verified": r.get("verified"),
             "run_seconds": rep["run_seconds"]} for r in rep["rows"]]


def markdown(table: list[dict]) -> str:
    head = ("| run | file | recall@10 | int8 / binary index recall@10 | cos to teacher | kNN sentiment (% teacher) | "
            "kNN domain (% teacher) | p50 ms | speed-up | MiB | smaller | rows agreeing with its torch model | "
            "verifies |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda v, s="{:.3f}": "—" if v is None else s.format(v)  # noqa: E731
    lines = [f"| {r['run']} | {r['file']} | {f(r['recall_at_10'])} | {f(r.get('index_int8_recall_at_10'))} / "
             f"{f(r.get('index_binary_rescored_recall_at_10'))} | {f(r['cosine_to_teacher'])} | "
             f"{f(r['knn_label'])} ({f(r['knn_label_vs_teacher'], '{:.1%}')}) | {f(r['knn_domain'])} "
             f"({f(r['knn_domain_vs_teacher'], '{:.1%}')}) | {r['p50_ms']:.2f} | {r['speedup']:.2f}x | "
             f"{r['file_mb']:.2f} | {r['smaller']:.1f}x | {f(r.get('agreeing_with_torch'), '{:.1%}')} | "
             f"{'baseline' if r['file'] == 'teacher-onnx-fp32' else 'yes' if r.get('verified') else 'no'} |"
             for r in table]
    return "\n".join([head, *lines]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs-embeddings"))
    ap.add_argument("--collect", type=Path, nargs="*", help="finished run folders: read them, run nothing")
    ap.add_argument("--ladder", action="store_true", help="also the earlier 3-layer recipes of this folder")
    args = ap.parse_args()
    dirs = args.collect if args.collect else [run(r, args.out) for r in [*(LADDER if args.ladder else []), SHIPPED]]
    if not args.collect:
        arts = dirs[-1] / "artifacts"
        subprocess.run([sys.executable, str(HERE / "peer.py"), str(arts / "teacher-onnx-int8"),
                        str(arts / "onnx-int8")], check=False)
    table = [row for d in dirs for row in rows(d)]
    (HERE / "results.json").write_text(json.dumps(table, indent=2))
    (HERE / "results.md").write_text(markdown(table))
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
