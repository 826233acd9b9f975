"""What ships: an export folder is a bundle an app can use as is, and this module writes and reads its non-model part.

    model.<suffix>   the model file (formats.py says which runtime opens it)
    io.json          inputs, dtypes, max sequence length, padding, output (export/base.IOSpec)
    tokenizer.json   the tokenizer whose ids match the model's embedding table (after vocabulary trimming, the
                     trimmed one: the original would give wrong ids)
    labels.json      {"labels": [name of class 0, name of class 1, ...]}
    expected.json    reference inputs and logits, checked on every device run
    README.txt       how to call it

Reading needs only the `tokenizers` library (no torch, no transformers): `edgecompress predict` runs from it.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgecompress.errors import UserInputError

TOKENIZER, LABELS, README = "tokenizer.json", "labels.json", "README.txt"


def write_bundle(out_dir: Path, tokenizer, label_names: list[str], io, fmt: str, precision: str) -> None:
    """tokenizer.json (the fast tokenizer's own file), labels.json and README.txt beside the model file."""
    from edgecompress.formats import FORMATS
    out_dir = Path(out_dir)
    backend = tokenizer.backend_tokenizer  # transformers' fast tokenizer wraps a `tokenizers.Tokenizer`
    backend.save(str(out_dir / TOKENIZER))
    if io.output_name == "embedding":  # a sentence encoder has no classes: no labels.json
        (out_dir / README).write_text(_embedding_readme(io, fmt, precision))
        return
    (out_dir / LABELS).write_text(json.dumps({"labels": list(label_names)}, indent=2))
    spec = FORMATS[fmt]
    names = ", ".join(f"{i}={n}" for i, n in enumerate(label_names))
    (out_dir / README).write_text(f"""A {precision} text classifier for {spec.runtime} ({spec.suffix}), made by edgecompress.

Inputs (io.json): {', '.join(io.input_names)}, {io.input_dtype} of shape [batch, seq], seq <= {io.max_seq_len}
tokens. Tokenize with tokenizer.json (the `tokenizers` library, or any port of it), truncating to {io.max_seq_len}
tokens; pad input_ids with {io.pad_token_id} and attention_mask with 0.{' The file has one fixed shape ' +
str(list(io.static_shape)) + ': pad every input to it.' if io.static_shape else ''}
Output: {io.output_name}, float32 [batch, {io.num_labels}]; argmax is the class, softmax the scores.
Classes (labels.json): {names}.
Check a port against expected.json: its inputs must give its logits (within its atol).
Try it: edgecompress predict THIS_FOLDER "some text"
""")


def _embedding_readme(io, fmt: str, precision: str) -> str:
    from edgecompress.formats import FORMATS
    spec = FORMATS[fmt]
    return f"""A {precision} sentence encoder for {spec.runtime} ({spec.suffix}), made by edgecompress.

Inputs (io.json): {', '.join(io.input_names)}, {io.input_dtype} of shape [batch, seq], seq <= {io.max_seq_len}
tokens. Tokenize with tokenizer.json (the `tokenizers` library, or any port of it), truncating to {io.max_seq_len}
tokens; pad input_ids with {io.pad_token_id} and attention_mask with 0.{' The file has one fixed shape ' +
str(list(io.static_shape)) + ': pad every input to it.' if io.static_shape else ''}
Output: {io.output_name}, float32 [batch, {io.num_labels}]: the sentence vector, pooled and normalised inside the
graph (padded tokens do not count); compare vectors by cosine (the dot product, when normalised).
Check a port against expected.json: its inputs must give its vectors (within its atol).
Try it: edgecompress predict THIS_FOLDER "some text" --json, or --rank corpus.txt "a query"
"""


def read_tokenizer(bundle, io):
    """The bundle's tokenizer (tokenizers.Tokenizer), truncating to the exported bound, no padding; refused when its
    ids do not fit the model's embedding table. `bundle` is the export's reader (artifact.ExportFiles): the file
    comes through its `file(name)`, confined to the folder and hash-checked, never by a path joined here."""
    from tokenizers import Tokenizer
    path = bundle.file(TOKENIZER)
    if path is None:
        raise UserInputError(f"{bundle.folder}: no {TOKENIZER}; this export predates bundles: re-export it "
                             f"(edgecompress run)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises its own exception types
        raise UserInputError(f"{path}: not a tokenizer file ({str(e)[:120]}); re-export the bundle") from None
    size, vocab = tok.get_vocab_size(with_added_tokens=True), io.vocab_size
    if size > vocab:
        raise UserInputError(f"{path}: the tokenizer has {size} tokens but the model's embedding table has {vocab}: "
                             f"they do not belong together (a tokenizer from before vocabulary trimming?); use the "
                             f"bundle's own files")
    tok.no_padding()
    tok.enable_truncation(io.max_seq_len)
    return tok


def read_labels(bundle, num_labels: int) -> list[str]:
    """labels.json through the export's reader (see read_tokenizer); class numbers when it has none."""
    path = bundle.file(LABELS)
    try:
        labels = json.loads(path.read_text())["labels"] if path is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        labels = None
    if not isinstance(labels, list) or len(labels) != num_labels:
        return [str(i) for i in range(num_labels)]
    return [str(x) for x in labels]


def samples(tok, texts: list[str], io) -> list[dict]:
    """One batch-of-one sample per text, unpadded, with exactly the model's input names."""
    out = []
    for enc in tok.encode_batch(list(texts)):
        row = {"input_ids": [list(enc.ids)], "attention_mask": [list(enc.attention_mask)],
               "token_type_ids": [list(enc.type_ids)]}
        out.append({n: row[n] for n in io.input_names})
    return out
