#!/usr/bin/env python3
"""edgecompress's Python agent: runs ON the device, measures one model file, prints ONE JSON line on stdout.

Self-contained on purpose: it is copied to a Raspberry Pi (with agent_runtimes.py beside it), so it uses the
standard library plus the one runtime it is asked for (imported lazily). numpy comes with onnxruntime and the TFLite
interpreters; torch is imported only for lite_interpreter (.ptl has no other Python runtime) and executorch (its
Python runtime takes torch tensors). The arguments and the JSON line are the protocol every runner speaks
(edgecompress/device/protocol.py).

    python3 agent.py --model m.onnx --io io.json --runtime onnxruntime --threads 1 --warmup-runs 5 --runs 50

Measurement semantics (docs/benchmarking.md has the long form, modelled on TFLite's benchmark_model):
  import_ms           importing the runtime's Python module (reported apart: an app links the runtime in)
  load_ms             wall time to create the session / load the program from the file
  first_inference_ms  the first call after load (allocations, lazy packing of weights); on --expected inputs if given
  warmup              --warmup-runs calls, not recorded
  runs                at least --runs calls and at least --min-time-s seconds; each call timed with perf_counter
  percentiles         linear interpolation between closest ranks, numpy's default 'linear' method
  std_ms              population standard deviation (ddof=0, numpy's default)
  peak_rss_mb         high-water mark of resident memory of this process (runtime + model + Python), MiB
Errors are one JSON line too: {"ok": false, "error": "..."} and a non-zero exit.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time

# libgomp/OpenMP threads busy-wait by default; on a 2-vCPU box that slowed onnxruntime 3x in the same process.
# Must be set before any runtime library loads, i.e. here, before the lazy imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The runtime loaders live in the sibling file the host pushes beside this one.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_io import check_expected, expected_inputs, random_inputs, read_samples, shape_of, to_rows  # noqa: E402
from agent_runtimes import IMPORTS, LOADERS, AgentError  # noqa: E402

AGENT_VERSION = 2
RUNTIMES = tuple(LOADERS)
ENV_KNOBS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY",
             "GOMP_CPU_AFFINITY")


# ---------------------------------------------------------------- statistics (stdlib; tested against numpy)

def percentile(values, q):
    """numpy.percentile(values, q) with the default method='linear': rank (n-1)*q/100, interpolated."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times_ms):
    n = len(times_ms)
    mean = sum(times_ms) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in times_ms) / n)  # ddof=0, like numpy.std
    r = lambda v: round(v, 4)  # noqa: E731
    return {"p50_ms": r(percentile(times_ms, 50)), "p90_ms": r(percentile(times_ms, 90)),
            "p99_ms": r(percentile(times_ms, 99)), "mean_ms": r(mean), "std_ms": r(std),
            "min_ms": r(min(times_ms)), "max_ms": r(max(times_ms)), "runs": n}


# ---------------------------------------------------------------- memory

def peak_rss_mb():
    """Peak resident set size of this process in MiB, or None where the OS does not say."""
    try:  # Linux and Android: VmHWM is the RSS high-water mark, in kB
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 2)
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is bytes on macOS/iOS but kilobytes on Linux and the BSDs.
    return round(rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0, 2)


# The same bound as edgecompress/limits.py (this file runs on the device without the package): a CPU id
# must fit sched_setaffinity's cpu_set_t, and a range is checked before a set of its members is built.
CPU_SETSIZE = 1024


def parse_cpu_list(text):
    """'4-7,9' -> {4, 5, 6, 7, 9} (the taskset/cpuset syntax), every id below CPU_SETSIZE."""
    if len(text) > 256:
        raise AgentError("--cpu-list is longer than 256 characters")
    cpus = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a, sep, b = part.partition("-")
        if not a.isdigit() or (sep and not b.isdigit()) or not a.isascii() or not b.isascii():
            raise AgentError(f"--cpu-list {text[:40]!r} is not a list like 4-7,9")
        lo, hi = int(a), int(b) if sep else int(a)
        if hi >= CPU_SETSIZE or lo > hi:
            raise AgentError(f"--cpu-list {text[:40]!r}: {part} is not a range of CPU ids 0..{CPU_SETSIZE - 1}")
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise AgentError(f"--cpu-list {text[:40]!r} names no CPU")
    return cpus


# ---------------------------------------------------------------- inputs

# The measurement defaults, as edgecompress.device.protocol.BenchSettings declares them (this file runs alone on the
# device, without the package; tests/device/test_bench_settings.py keeps the two, and the native runner, equal).
RUN_DEFAULTS = {"threads": 1, "warmup_runs": 5, "runs": 50, "batch": 1, "seq_len": 128}


def parse_args(argv):
    d = RUN_DEFAULTS
    p = argparse.ArgumentParser(description="edgecompress on-device bench agent (prints one JSON line)")
    p.add_argument("--model", required=True)
    p.add_argument("--io", required=True, help="io.json written by the exporter beside the model")
    p.add_argument("--runtime", required=True, choices=RUNTIMES)
    p.add_argument("--threads", type=int, default=d["threads"])
    p.add_argument("--warmup-runs", type=int, default=d["warmup_runs"])
    p.add_argument("--runs", type=int, default=d["runs"])
    p.add_argument("--min-time-s", type=float, default=0.0, help="keep running past --runs until this much time")
    p.add_argument("--batch", type=int, default=d["batch"])
    p.add_argument("--seq-len", type=int, default=None, help=f"default: min({d['seq_len']}, io.json max_seq_len)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inputs", help="JSON of real tokenized samples instead of random ids")
    p.add_argument("--expected", help="JSON with inputs (or seed+batch+seq_len) and reference logits")
    p.add_argument("--predict", action="store_true",
                   help="with --inputs: run every sample once (before warmup) and report its logits and argmax labels")
    p.add_argument("--extra-file", action="append", default=[], help="sidecar counted in file_mb (ONNX external data)")
    p.add_argument("--cpu-list", help="pin to these CPUs, e.g. 4-7 (the big cores of a big.LITTLE SoC)")
    p.add_argument("--tokenizer", help="with --texts: tokenizer.json, to time text -> label (tokenize + infer)")
    p.add_argument("--texts", help="with --tokenizer: JSON list of real texts, cycled over --runs")
    return p.parse_args(argv)


def _check_args(args):
    for name, v in (("--threads", args.threads), ("--runs", args.runs), ("--batch", args.batch)):
        if v < 1:
            raise AgentError(f"{name} must be >= 1, got {v}")
    if args.warmup_runs < 0 or args.min_time_s < 0:
        raise AgentError(f"--warmup-runs and --min-time-s must be >= 0, got {args.warmup_runs}, {args.min_time_s}")
    if not os.path.isfile(args.model):
        raise AgentError(f"model file not found: {args.model}")
    if args.predict and not args.inputs:
        raise AgentError("--predict needs --inputs (the samples whose labels are wanted)")


def _pin(cpu_list):
    if not cpu_list:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise AgentError("--cpu-list needs os.sched_setaffinity (Linux/Android only)")
    os.sched_setaffinity(0, parse_cpu_list(cpu_list))
    return sorted(os.sched_getaffinity(0))


def _load(runtime, model, threads, io):
    """Import the runtime (timed apart: an app links it in) and load the model: (loaded, import_ms, load_ms)."""
    try:
        t0 = time.perf_counter()
        for mod in IMPORTS[runtime]:
            importlib.import_module(mod)
        import_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        loaded = LOADERS[runtime](model, threads, io)
        return loaded, import_ms, (time.perf_counter() - t0) * 1e3
    except ImportError as e:
        raise AgentError(f"runtime {runtime} is not installed on this device: {e}") from None


def _predict(run, feeds):
    """One pass over the real samples: the host compares these labels with its own."""
    t0 = time.perf_counter()
    logits = [row for feed in feeds for row in to_rows(run(feed))]
    return {"predictions": [max(range(len(r)), key=r.__getitem__) for r in logits],
            "logits": [[round(v, 6) for v in r] for r in logits], "predict_s": round(time.perf_counter() - t0, 3)}


def _measure(run, feeds, warmup_runs, runs, min_time_s):
    for i in range(warmup_runs):
        run(feeds[i % len(feeds)])
    times = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_time_s:
        feed = feeds[len(times) % len(feeds)]
        t0 = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return {**summarize(times), "measure_s": round(time.perf_counter() - start, 3)}


def _end_to_end(args, io, prepare, run):
    """text -> logits as an app pays for it: tokenize (the `tokenizers` library) + prepare + run, per text.
    A device without the library still gets its model-only numbers: the reason is reported instead."""
    if not (args.tokenizer and args.texts):
        return {}
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return {"e2e_error": "the tokenizers library is not installed on this device (pip install tokenizers)"}
    tok = Tokenizer.from_file(args.tokenizer)
    tok.no_padding()
    tok.enable_truncation(int(io.get("max_seq_len", RUN_DEFAULTS["seq_len"])))
    with open(args.texts, encoding="utf-8") as f:
        texts = [str(t) for t in json.load(f)]
    if not texts:
        raise AgentError(f"{args.texts}: no texts")
    total, tokenize = [], []
    for i in range(max(args.runs, len(texts))):
        t0 = time.perf_counter()
        enc = tok.encode(texts[i % len(texts)])
        t1 = time.perf_counter()
        run(prepare({"input_ids": [enc.ids], "attention_mask": [enc.attention_mask], "token_type_ids": [enc.type_ids]}))
        t2 = time.perf_counter()
        tokenize.append((t1 - t0) * 1e3)
        total.append((t2 - t0) * 1e3)
    e2e, tk = summarize(total), summarize(tokenize)
    return {"e2e_p50_ms": e2e["p50_ms"], "e2e_p90_ms": e2e["p90_ms"], "tokenize_p50_ms": tk["p50_ms"],
            "e2e_texts": len(texts), "e2e_runs": e2e["runs"]}


def _about_this_device():
    # Set by an emulating transport (qemu-arm64): latency measured under emulation is not a device figure.
    emulator = os.environ.get("EDGECOMPRESS_EMULATOR")
    out = {"env": {k: os.environ.get(k) for k in ENV_KNOBS if os.environ.get(k) is not None},
           "emulated": bool(emulator), "python": platform.python_version(), "machine": platform.machine(),
           "system": platform.system(), "release": platform.release(), "node": platform.node(),
           "cpu_count": os.cpu_count()}
    if emulator:
        out["emulator"] = emulator
    return out


def bench(args):
    _check_args(args)
    with open(args.io) as f:
        io = json.load(f)
    pinned = _pin(args.cpu_list)
    seq_len = args.seq_len or min(RUN_DEFAULTS["seq_len"], int(io.get("max_seq_len", RUN_DEFAULTS["seq_len"])))
    if args.inputs:
        samples = read_samples(args.inputs, io)
        batch, seq_len = shape_of(samples[0])
    else:
        batch = args.batch
        samples = [random_inputs(io, batch, seq_len, args.seed)]
    expected = None
    if args.expected:
        with open(args.expected) as f:
            expected = json.load(f)
    (prepare, run, version, runtime_notes), import_ms, load_ms = _load(args.runtime, args.model, args.threads, io)
    feeds = [prepare(s) for s in samples]
    first_feed = prepare(expected_inputs(expected, io, batch, seq_len, args.seed)) if expected else feeds[0]
    t0 = time.perf_counter()
    first_out = run(first_feed)
    first_ms = (time.perf_counter() - t0) * 1e3
    check = check_expected(expected, to_rows(first_out)) if expected else None
    predicted = _predict(run, feeds) if args.predict else None
    timing = _measure(run, feeds, args.warmup_runs, args.runs, args.min_time_s)
    timing.update(_end_to_end(args, io, prepare, run))
    file_bytes = os.path.getsize(args.model) + sum(os.path.getsize(p) for p in args.extra_file)
    result = {"ok": True, "runner": "python", "agent_version": AGENT_VERSION, "runtime": args.runtime,
              "runtime_version": version, "model": os.path.basename(args.model),
              "file_mb": round(file_bytes / 2 ** 20, 3), "batch": batch, "seq_len": seq_len, "threads": args.threads,
              "warmup_runs": args.warmup_runs, "min_time_s": args.min_time_s,
              "inputs": "samples" if args.inputs else f"random(seed={args.seed})", "import_ms": round(import_ms, 3),
              "load_ms": round(load_ms, 3), "first_inference_ms": round(first_ms, 3), **timing,
              # The Python agent's peak includes the interpreter and the runtime's Python bindings.
              "peak_rss_mb": peak_rss_mb(), "peak_rss_includes": "python interpreter + runtime + model",
              "runtime_threads": runtime_notes, "cpu_list": pinned}
    if check:
        result["expected_check"] = check
    if predicted:
        result.update(predicted)
    result.update(_about_this_device())
    return result


def main(argv=None):
    # Native runtimes may print to fd 1; the contract is exactly one JSON line on stdout, so everything else
    # written to fd 1 goes to stderr while the agent runs and the JSON goes to the saved stdout.
    sys.stdout.flush()
    saved_fd = os.dup(1)
    os.dup2(2, 1)
    py_stdout, sys.stdout = sys.stdout, sys.stderr
    code = 0
    try:
        result = bench(parse_args(argv))
    except SystemExit as e:  # argparse: usage already went to stderr
        result, code = {"ok": False, "error": f"bad arguments (exit {e.code}); see stderr"}, 2
    except AgentError as e:
        result, code = {"ok": False, "error": str(e)}, 1
    except Exception as e:  # noqa: BLE001 - a runtime's own failure, reported as data
        first = (str(e).strip().splitlines() or [""])[0][:500]
        result, code = {"ok": False, "error": f"{type(e).__name__}: {first}"}, 1
    sys.stderr.flush()
    os.dup2(saved_fd, 1)  # restore, so importing and calling main() in a test leaves the process as it was
    os.close(saved_fd)
    sys.stdout = py_stdout
    sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
