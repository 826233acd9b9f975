"""results.md of the multilingual benchmark, from its results.json (run.py --render rewrites it)."""
from __future__ import annotations


def to_markdown(r: dict) -> str:
    m, tk = r["meta"], r.get("tokenizer", {})
    lines = ["# Multilingual: a 250k-vocabulary XLM-R teacher, trimmed to its corpus, ONNX int8", "",
             f"{m['machine']}; torch {m['torch']}, transformers {m['transformers']}, {m['torch_threads']} torch "
             f"thread, OMP_WAIT_POLICY={m['omp_wait_policy']}; max_seq_len {m['seq']}; splits {m['splits']}.", "",
             f"Command: `{r['command'].strip()}`", ""]
    if tk:
        lines += [f"Tokenizer: Unigram, {tk['learned_pieces']:,} pieces learned from the VADER train split + "
                  f"{tk['synthetic_pieces']:,} synthetic non-Latin pieces = {tk['pieces']:,} "
                  f"(VADER texts segmented differently by the synthetic pieces: "
                  f"{tk['texts_segmented_differently_by_synthetic_pieces']}); built in {tk['seconds']} s.", ""]
    t = r.get("teacher")
    if t:
        tt = m["teacher_train"]
        lines += [f"Teacher: {m['teacher_config']}, {t['params']:,} params ({t['embedding_params']:,} in the "
                  f"embedding table), fine-tuned from random init on {tt['rows']:,} train rows x {tt['epochs']} "
                  f"epochs (lr {tt['learning_rate']}, batch {tt['batch_size']}) in {t['seconds']} s: test accuracy "
                  f"{t['test_accuracy']:.4f} (torch).", ""]
    if "trimmed_int8" in r:
        u, tr, tv = r["untrimmed_int8"], r["trimmed_int8"], r["trim_vocab"]
        loss = r["result"]["accuracy_loss_points"]
        lines += ["| | vocab | int8 file MiB | test acc (onnxruntime int8) | export s | eval s |",
                  "|---|---|---|---|---|---|",
                  f"| untrimmed | {u['vocab_size']:,} | {u['file_mib']} | {u['test_accuracy']:.4f} | {u['export_s']} | "
                  f"{u['eval_s']} |",
                  f"| trim_vocab (min_count {tv['min_count']}, train split) | {tr['vocab_size']:,} | "
                  f"{tr['file_mib']} | "
                  f"{tr['test_accuracy']:.4f} | {tr['export_s']} | {tr['eval_s']} |", "",
                  f"**{r['result']['size_ratio']}x smaller**, accuracy lost **{loss:.2f} points**"
                  + (" (the trimmed file scored higher)" if loss < 0 else "")
                  + f", int8 vs int8 on all {m['splits']['test']:,} test rows; label agreement "
                  f"trimmed vs untrimmed int8 {tr['label_agreement_with_untrimmed_int8']:.4f}; target (>= 10x at "
                  f"<= 1 point) {'met' if r['result']['meets_target'] else 'NOT met'}.", "",
                  f"trim_vocab: {tv['vocab_size_before']:,} -> {tv['vocab_size']:,} rows from {tv['corpus_texts']:,} "
                  f"texts ({tv['corpus_tokens']:,} tokens), params {tv['params_before']:,} -> {tv['params']:,}, "
                  f"torch test accuracy after trimming {tv['torch_test_accuracy']:.4f}, recovery "
                  f"{'none' if not tv['recovery'] else tv['recovery']}, {tv['seconds']} s (includes its own "
                  f"validation/test evaluation).", ""]
    if r.get("sweep"):
        un = r.get("untrimmed_int8", {}).get("file_mib")
        lines += ["Sensitivity (sizes only: untrained teacher, same trimming functions and exporter): the learned "
                  "share of the vocabulary decides how many rows the corpus uses.", "",
                  "| learned pieces | rows kept | trimmed int8 MiB | untrimmed / trimmed |", "|---|---|---|---|"]
        main_row = {"learned_pieces": tk.get("learned_pieces"),
                    "vocab_kept": r.get("trimmed_int8", {}).get("vocab_size"),
                    "trimmed_int8_mib": r.get("trimmed_int8", {}).get("file_mib"), "main": True}
        rows = sorted(r["sweep"] + ([main_row] if main_row["vocab_kept"] else []), key=lambda s: s["learned_pieces"])
        for s in rows:
            ratio = f"{un / s['trimmed_int8_mib']:.2f}x" if un else "-"
            main = " (the trained run above)" if s.get("main") else ""
            lines.append(f"| {s['learned_pieces']:,}{main} | {s['vocab_kept']:,} | {s['trimmed_int8_mib']} | {ratio} |")
        lines.append("")
    if "wall_s" in m:
        lines.append(f"Whole run: {m['wall_s']} s wall, {m['cpu_s']} s CPU (this process).")
    return "\n".join(lines) + "\n"
