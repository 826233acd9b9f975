"""TFLite / LiteRT (.tflite) exporter: litert-torch conversion at one static shape; int8 via ai-edge-quantizer.

Writes ONE file, model.tflite, plus io.json. Needs the `tflite` extra (litert-torch pulls jax, ~750 MB).

- Static shape: litert-torch 0.10 fails to convert BERT with dynamic shapes, so the file has one signature,
  input_ids/attention_mask int32 [batch, max_seq_len] (int32: TFLite kernels have no int64 gather, and litert-torch
  downcasts int64 anyway). io.json records it (static_shape, input_dtype=int32, pad_to_max=true) and every caller pads
  the same way: input_ids with pad_token_id, attention_mask with 0, so the padded positions are masked out; batches
  other than the signature's are run in chunks of it (the last chunk filled with copies of its last row, dropped).
  The host InferFn (load) and the bench agent share that rule; with a fixed shape, latency does not depend on the
  real sentence length: every call costs a max_seq_len call.
- Shapes are also read back from the interpreter, so a file whose io.json lost the static fields still pads right.
- int8: ai-edge-quantizer dynamic range recipe (`dynamic_wi8_afp32` family): int8 symmetric weights, channelwise
  when the intent asks per_channel else tensorwise, fp32 activations quantized at run time. It also quantizes
  the embedding table (EMBEDDING_LOOKUP, like ONNX's int8 Gather) unless the intent says embeddings: false.
  activations: static and weights: codebook are refused (edgecompress/formats.py), not silently approximated:
  full int8 (ai-edge-quantizer static_wi8_ai8, calibrated) measured 9.6 points below fp32 on the default student
  (attention mask add, int8 LayerNorm over outlier features; docs/tflite.md, benchmarks/tflite_static/).
  QAT runs in torch first (quant/qat.py), as for every format.
  PT2E int8 through litert-torch converts but fails at run time (EMBEDDING_LOOKUP zero point): not used.
- Runtime: ai-edge-litert's Interpreter (tflite-runtime 2.14 is built for numpy 1.x; with numpy 1.26 its int8 models
  silently output zeros, which is why the bench agent checks the first inference against expected.json).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np

from edgecompress.errors import RuntimeFailure, UserInputError
from edgecompress.export.base import ExportJob, Exporter, exporter, InferFn, IOSpec, check_inputs, read_io_beside


@contextmanager
def _quiet_converter():
    """litert-torch prints a rich progress tree per conversion stage; the pipeline shows its own status line."""
    keys = ("LITERT_TORCH_SHOW_PROGRESS",)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with warnings.catch_warnings():
            # torch.export's pytree "isinstance(treespec, LeafSpec) is deprecated": internal to litert-torch.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pad_rows(ids: np.ndarray, mask: np.ndarray, shape: tuple[int, int], pad_token_id: int):
    """[B,S] int64 -> list of (ids, mask) int32 chunks of exactly `shape`, and B (rows to keep from the outputs).

    The sequence axis is padded with pad_token_id / mask 0 (masked out); rows are split into chunks of shape[0], the
    last chunk filled with copies of its last row (their outputs are dropped). device/agent.py does the same.
    """
    sb, ss = shape
    b, s = ids.shape
    if s > ss:
        raise UserInputError(f"sequence length {s} exceeds the .tflite signature's {ss}; truncate inputs")
    pid = np.full((b, ss), pad_token_id, dtype=np.int32)
    pmask = np.zeros((b, ss), dtype=np.int32)
    pid[:, :s] = ids
    pmask[:, :s] = mask
    chunks = []
    for start in range(0, b, sb):
        ci, cm = pid[start:start + sb], pmask[start:start + sb]
        if ci.shape[0] < sb:
            fill = sb - ci.shape[0]
            ci = np.concatenate([ci, np.repeat(ci[-1:], fill, axis=0)])
            cm = np.concatenate([cm, np.repeat(cm[-1:], fill, axis=0)])
        chunks.append((np.ascontiguousarray(ci), np.ascontiguousarray(cm)))
    return chunks, b


def quantize_tflite(fp32: bytes, quant) -> bytes:
    """The quantization intent realized by ai-edge-quantizer: dynamic range int8 weights, fp32 activations.
    What it cannot realize (static activations, codebook weights) the exporter refused before converting."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager

    granularity = qtyping.QuantGranularity.CHANNELWISE if quant.per_channel else qtyping.QuantGranularity.TENSORWISE
    rm = recipe_manager.RecipeManager()
    # Same as ai_edge_quantizer.recipe.dynamic_wi8_afp32() (channelwise), with the granularity of the intent.
    rm.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=8,
                          granularity=granularity)
    if getattr(quant, "embeddings", None) is False:  # unset (None) and True: int8 table, like ONNX's Gather
        rm.add_quantization_config(regex=".*", operation_name=qtyping.TFLOperationName.EMBEDDING_LOOKUP,
                                   algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    try:
        # It print()s a size summary: keep stdout for the CLI's own output (--json).
        with redirect_stdout(sys.stderr):
            q = quantizer.Quantizer(bytearray(fp32), rm.get_quantization_recipe())
            out = q.quantize().quantized_model
    except Exception as e:  # noqa: BLE001 - any quantizer failure is a runtime failure of this export
        raise RuntimeFailure(f"ai-edge-quantizer dynamic int8 failed: {type(e).__name__}: {e}") from e
    if out is None:
        raise RuntimeFailure("ai-edge-quantizer returned no model")
    return bytes(out)


@exporter("tflite")
class TfliteExporter(Exporter):
    # self.batch is the signature's batch. 1 fits the phone/Pi case (one sentence per call); larger batches are looped.

    def file_io(self, io: IOSpec) -> IOSpec:
        return dataclasses.replace(io, input_dtype="int32", static_shape=(self.batch, io.max_seq_len), pad_to_max=True)

    def describe(self, io: IOSpec, quant) -> tuple[list[str], dict]:
        notes, details = super().describe(io, quant)
        notes.append(f"static signature int32 [{self.batch}, {io.max_seq_len}]: inputs padded to max_seq_len "
                 f"(pad_token_id {io.pad_token_id}, mask 0); every call costs a {io.max_seq_len}-token call")
        details.update(converter="litert_torch.convert", static_shape=[self.batch, io.max_seq_len],
                       input_dtype="int32")
        return notes, details

    def convert(self, module, io: IOSpec, tmp: Path) -> bytes:
        """fp32 .tflite bytes of (input_ids, attention_mask) int32 [batch, max_seq_len] -> logits."""
        import torch
        with _quiet_converter():
            import litert_torch
            ex = io.example_inputs(self.batch, io.max_seq_len)
            kwargs = {n: torch.from_numpy(ex[n].astype(np.int32)) for n in ("input_ids", "attention_mask")}
            try:
                # sample_kwargs, not args: the signature's inputs are then named input_ids/attention_mask
                # (tensors "serving_default_input_ids"), not args_0/args_1.
                edge = litert_torch.convert(module, sample_kwargs=kwargs)
                edge.export(str(tmp / "fp32.tflite"))
            except Exception as e:  # noqa: BLE001
                raise RuntimeFailure(f"litert-torch conversion failed: {type(e).__name__}: "
                                     f"{(str(e).splitlines() or [''])[0][:300]}") from e
            return (tmp / "fp32.tflite").read_bytes()

    def lower(self, job: ExportJob, module) -> bytes:
        t0 = time.perf_counter()
        data = self.convert(module, job.io, job.tmp)
        job.details["convert_s"] = round(time.perf_counter() - t0, 2)
        return data

    def quantize_program(self, job: ExportJob, program: bytes) -> bytes:
        quant = job.quant
        data = quantize_tflite(program, quant)
        gran = "channelwise" if quant.per_channel else "tensorwise"
        table = getattr(quant, "embeddings", None) is not False
        emb = "embedding table int8" if table else "embedding table fp32"
        if table and quant.embedding_bits == 4:
            # A 4-bit EMBEDDING_LOOKUP is not wired or checked in LiteRT here: the intent's "4 where the runtime has
            # a kernel" is realized as 8, and the file says so.
            emb += "; embedding_bits 4 realized as 8: no 4-bit lookup is wired for LiteRT here"
        job.notes.append(f"int8: ai-edge-quantizer dynamic range, int8 {gran} weights ({emb}), "
                         f"activations fp32 quantized at run time")
        job.details.update(quantizer="ai_edge_quantizer dynamic_wi8_afp32", per_channel=quant.per_channel,
                           int8_embeddings=table, embedding_bits=8 if table else 32)
        return data

    def write(self, job: ExportJob, program: bytes, out: Path) -> None:
        out.write_bytes(program)

    def load(self, path: Path, threads: int = 1) -> InferFn:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        io = read_io_beside(path)
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
        slots = {}
        for d in interp.get_input_details():
            for n in ("input_ids", "attention_mask"):
                if d["name"] == n or d["name"].endswith("_" + n) or d["name"].startswith(f"serving_default_{n}:"):
                    slots[n] = d
        if set(slots) != {"input_ids", "attention_mask"}:
            raise RuntimeFailure(f"{path.name} has inputs {[d['name'] for d in interp.get_input_details()]}; "
                                 "expected input_ids and attention_mask")
        # The file is the truth for its shape (io.json may predate the static fields).
        shape = tuple(int(v) for v in slots["input_ids"]["shape"])
        out_index = interp.get_output_details()[0]["index"]

        def infer(inputs: dict[str, np.ndarray]) -> np.ndarray:
            ids, mask = check_inputs(inputs, io)
            chunks, n = pad_rows(ids, mask, shape, io.pad_token_id)
            outs = []
            for ci, cm in chunks:
                interp.set_tensor(slots["input_ids"]["index"], ci)
                interp.set_tensor(slots["attention_mask"]["index"], cm)
                interp.invoke()
                outs.append(np.array(interp.get_tensor(out_index), dtype=np.float32))  # copy: the buffer is reused
            return np.concatenate(outs)[:n]

        return infer
