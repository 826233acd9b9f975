"""The command line: argument parsing and exit codes only; the work is in the modules each command calls.
Every command returns an exit code; errors print one line (no traceback unless --debug)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# libgomp's active waiting on a 2-vCPU box made MiniLM eager 10x slower and slowed onnxruntime in the same
# process (measured: 952 vs 93 ms). Must be set before torch loads libgomp, hence at import of the CLI.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# No model hub at run time: everything is loaded from local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402

from edgecompress.errors import EdgeCompressError  # noqa: E402

# torchao (imported by transformers when installed) logs a failed load of CUDA-only kernels on CPU builds, and
# torch logs pytree deprecations: noise on every run that users cannot act on.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)


DESCRIPTION = ("Shrink a fine-tuned text classifier into a small int8 model for devices (ONNX, .ptl, .pte, .tflite), "
               "verified and benchmarked in the runtime that runs it.")
EPILOG = ("Start with `edgecompress run` (the packaged default recipe), then `edgecompress predict` on a bundle it "
          "made. Exit codes: 0 ok, 1 budget missed, 2 bad input, 3 runtime failure, 130 interrupted.")


def _cmd_run(args) -> int:
    from edgecompress.pipeline import run
    return run(args.recipe, out_dir=args.out, quiet=args.quiet, json_output=args.json, rebench=args.rebench,
               debug=args.debug)


def _cmd_plan(args) -> int:
    from edgecompress.plan import plan_command
    return plan_command(args.recipe, json_output=args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecompress", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks and third-party warnings (otherwise kept in the run folder's run.log)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe end to end (no argument: the embedded default)")
    r.add_argument("recipe", nargs="?", type=Path, help="recipe YAML (default: edgecompress/recipes/default.yaml)")
    r.add_argument("--out", type=Path, default=Path("runs"), help="parent folder of run folders (default: ./runs)")
    r.add_argument("--quiet", action="store_true", help="no progress; end on the verdict and the report's path")
    r.add_argument("--json", action="store_true", help="print only the final report as JSON on stdout (no summary)")
    r.add_argument("--rebench", action="store_true", help="measure again even where a cached benchmark exists")
    r.set_defaults(func=_cmd_run)

    pl = sub.add_parser("plan", help="validate a recipe without doing any work")
    pl.add_argument("recipe", nargs="?", type=Path)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_cmd_plan)

    from edgecompress.bench import commands as bench_commands
    bench_commands.register(sub)
    from edgecompress.bench import on_target
    on_target.register(sub)
    from edgecompress import predict
    predict.register(sub)
    from edgecompress.fit import command as fit_command
    fit_command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from edgecompress.logs import set_debug
    set_debug(args.debug)
    try:
        return int(args.func(args) or 0)
    except EdgeCompressError as e:
        if args.debug:
            raise
        print(f"edgecompress: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgecompress: interrupted; finished steps are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure is still one line; --debug shows where
        if args.debug:
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"edgecompress: error: {type(e).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
