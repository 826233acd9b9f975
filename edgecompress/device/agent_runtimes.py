"""The runtimes the on-device agent can load, one loader each: load(path, threads, io) -> (prepare, run, version,
notes). Shipped beside agent.py (the host pushes both); standard library at import, and each loader imports its one
runtime lazily, so a device needs only the runtime of the file it runs.

Adding a format: one row in edgecompress/formats.py, and here one loader under the row's runtime name in LOADERS
(plus the modules it imports, timed apart as import_ms, in IMPORTS).
"""
from __future__ import annotations


class AgentError(Exception):
    """A failure reported as the agent's one JSON line: {"ok": false, "error": ...}."""


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return "unknown"


def _load_onnxruntime(path, threads, io):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1  # one BERT graph has no parallel branches worth a second pool
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    declared = {i.name for i in sess.get_inputs()}
    names = [n for n in io["input_names"] if n in declared]
    dtype = np.dtype(io.get("input_dtype", "int64"))
    out_name = io.get("output_name")
    outputs = [out_name] if out_name in {o.name for o in sess.get_outputs()} else None

    def prepare(sample):
        return {n: np.asarray(sample[n], dtype=dtype) for n in names}

    def run(feed):
        return sess.run(outputs, feed)[0]

    return prepare, run, ort.__version__, {"intra_op_num_threads": threads}


def _load_executorch(path, threads, io):
    import torch
    from executorch.runtime import Runtime

    notes = {}
    try:
        # Best effort: resizes ExecuTorch's shared threadpool (XNNPACK's delegate uses it). Private API, may move.
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
        _unsafe_reset_threadpool(threads)
        notes["threadpool_threads"] = int(_threadpool_get_thread_count())
    except Exception as e:  # noqa: BLE001 - any failure here only means the default pool size is used
        notes["threadpool_threads"] = f"not set: {type(e).__name__}"
    torch.set_num_threads(threads)
    method = Runtime.get().load_program(path).load_method("forward")
    dtype = getattr(torch, io.get("input_dtype", "int64"))

    def prepare(sample):
        return [torch.tensor(sample[n], dtype=dtype) for n in io["input_names"]]

    def run(args):
        return method.execute(args)[0]

    return prepare, run, _version("executorch"), notes


def _load_lite_interpreter(path, threads, io):
    import torch
    # torch.jit.mobile is the public home of the loader (torch.jit has no such attribute in 2.13, and
    # torch._C._load_for_lite_interpreter trips an internal assert on this build).
    from torch.jit.mobile import _load_for_lite_interpreter

    torch.set_num_threads(threads)
    module = _load_for_lite_interpreter(path)
    dtype = getattr(torch, io.get("input_dtype", "int64"))

    def prepare(sample):
        return [torch.tensor(sample[n], dtype=dtype) for n in io["input_names"]]

    def run(args):
        out = module(*args)
        return out[0] if isinstance(out, (tuple, list)) else out

    return prepare, run, torch.__version__, {"torch_num_threads": torch.get_num_threads()}


def _tflite_interpreter():
    """(Interpreter class, distribution name): ai-edge-litert first (maintained), else tflite-runtime (what many Pi
    images have; 2.14 with numpy 1.26 silently outputs zeros for int8 models, so --expected matters), else TF."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        from tensorflow.lite import Interpreter  # type: ignore
    except ImportError:
        raise ImportError("none of ai-edge-litert, tflite-runtime, tensorflow (pip install ai-edge-litert)") from None
    return Interpreter, "tensorflow"


def tflite_chunks(sample, names, shape, pad_values):
    """{name: [[...]]} -> (list of {name: rows} of exactly shape=[batch, seq], real row count). Pure stdlib.

    The .tflite exporter's rule (io.json pad_to_max, static_shape): each row padded to seq with pad_values[name]
    (pad_token_id for input_ids, 0 for the mask: padded positions are masked out), rows run in chunks of batch, the
    last chunk filled with copies of its last row whose outputs are dropped.
    """
    sb, ss = shape
    n = len(sample[names[0]])
    padded = {}
    for name in names:
        rows = sample[name]
        if len(rows) != n:
            raise AgentError(f"input {name} has {len(rows)} rows, {names[0]} has {n}")
        for r in rows:
            if len(r) > ss:
                raise AgentError(f"sequence length {len(r)} exceeds the .tflite signature's {ss}")
        padded[name] = [list(r) + [pad_values[name]] * (ss - len(r)) for r in rows]
    chunks = []
    for start in range(0, n, sb):
        chunk = {name: padded[name][start:start + sb] for name in names}
        for name in names:
            chunk[name] += [chunk[name][-1]] * (sb - len(chunk[name]))
        chunks.append(chunk)
    return chunks, n


def _load_tflite(path, threads, io):
    import numpy as np

    Interpreter, dist = _tflite_interpreter()
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    details = interp.get_input_details()

    def index_for(name):
        # litert-torch names the tensors "serving_default_<name>", TF ":0"-suffixed ones; exact names win.
        for match in (lambda n: n == name, lambda n: n.endswith("_" + name) or n.endswith("_" + name + ":0"),
                      lambda n: name in n):
            for d in details:
                if match(d["name"]):
                    return d
        raise AgentError(f"tflite model has no input like {name!r}; it has {[d['name'] for d in details]}")

    names = list(io["input_names"])
    slots = [(n, index_for(n)) for n in names]
    out_index = interp.get_output_details()[0]["index"]
    signature = [int(v) for v in slots[0][1].get("shape_signature", slots[0][1]["shape"])]
    # A fixed signature (no -1): pad/chunk to it. The file is the truth, io.json static_shape says the same.
    static = None if any(v < 0 for v in signature) else tuple(int(v) for v in slots[0][1]["shape"])
    pads = {n: (int(io.get("pad_token_id", 0)) if n == "input_ids" else 0) for n in names}
    state = {"shape": None}

    def prepare(sample):
        if static is None:
            return [[(d, np.asarray(sample[n], dtype=d["dtype"])) for n, d in slots]], None
        chunks, n_rows = tflite_chunks(sample, names, static, pads)
        return [[(d, np.asarray(c[n], dtype=d["dtype"])) for n, d in slots] for c in chunks], n_rows

    def run(feed):
        chunks, n_rows = feed
        outs = []
        for chunk in chunks:
            if static is None and state["shape"] != chunk[0][1].shape:  # a dynamic signature: resize once per shape
                for d, arr in chunk:
                    interp.resize_tensor_input(d["index"], arr.shape)
                interp.allocate_tensors()
                state["shape"] = chunk[0][1].shape
            for d, arr in chunk:
                interp.set_tensor(d["index"], arr)
            interp.invoke()
            outs.append(np.array(interp.get_tensor(out_index)))  # copy: the output buffer is reused by the next call
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return out if n_rows is None else out[:n_rows]

    notes = {"num_threads": threads, "interpreter": dist}
    if static is not None:
        notes["static_shape"] = list(static)
    return prepare, run, f"{dist} {_version(dist)}", notes


# Imported (and timed as import_ms) before load_ms starts: importing torch alone takes seconds on a Pi, which is
# a cost of the Python harness, not of loading the model in an app that already has the runtime linked in.
# executorch.kernels.quantized registers embedding_byte, which .pte files with an int8 embedding table run.
IMPORTS = {"onnxruntime": ("onnxruntime", "numpy"), "executorch": ("torch", "executorch.runtime",
                                                                    "executorch.kernels.quantized"),
           "lite_interpreter": ("torch",), "tflite": ("numpy",)}
LOADERS = {"onnxruntime": _load_onnxruntime, "executorch": _load_executorch,
           "lite_interpreter": _load_lite_interpreter, "tflite": _load_tflite}
