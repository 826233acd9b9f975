"""Datasets: the packaged VADER splits or a user's local train/validation/test files (.csv or .jsonl).

Each problem with the data is a one-line UserInputError naming the file, the column and the fix, raised
while planning, before any training starts.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from edgecompress.compute import CPU_EVAL_BATCH
from edgecompress.errors import UserInputError
from edgecompress.recipe import PACKAGED_DATA, DataCfg

SPLITS = ("train", "validation", "test")
EVAL_BATCH = CPU_EVAL_BATCH  # rows per forward when a model is only evaluated on the CPU (compute.py says why)
PACKAGED_DIR = Path(__file__).parent / "vader"
LABELS_FILE = "labels.json"  # beside the split files: the names of integer classes


@dataclass
class Split:
    name: str
    texts: list[str]
    labels: np.ndarray                     # int64 class ids in [0, num_labels)
    domains: Optional[list[str]] = None
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: Optional[int], seed: int = 0) -> "Split":
        if n is None or n >= len(self):
            return self
        # Stratified by label so a small subset keeps the class balance.
        rng = np.random.default_rng(seed)
        idx = []
        for c in np.unique(self.labels):
            members = np.flatnonzero(self.labels == c)
            k = max(1, round(n * len(members) / len(self)))
            idx.extend(rng.choice(members, size=min(k, len(members)), replace=False))
        idx = np.sort(np.array(idx[:n] if len(idx) > n else idx))
        return Split(self.name, [self.texts[i] for i in idx], self.labels[idx],
                     [self.domains[i] for i in idx] if self.domains else None, self.label_names)


def data_dir(cfg: DataCfg) -> Path:
    if cfg.source == PACKAGED_DATA:
        return PACKAGED_DIR
    if cfg.source.startswith("packaged:"):
        raise UserInputError(f"data.source {cfg.source!r} is not a packaged data set; use {PACKAGED_DATA!r} or a directory")
    p = Path(cfg.source).expanduser()
    if not p.is_dir():
        raise UserInputError(f"data.source {p} is not a directory; give a folder with train/validation/test .csv or .jsonl files")
    return p


def split_file(directory: Path, split: str) -> Path:
    for ext in (".csv", ".jsonl", ".txt"):
        if (directory / f"{split}{ext}").is_file():
            return directory / f"{split}{ext}"
    raise UserInputError(f"{directory}: no {split}.csv, {split}.jsonl or {split}.txt; every data folder needs train, "
                         f"validation and test files")


def fingerprint(cfg: DataCfg) -> str:
    """sha256 over the split files' bytes: the data's identity in artifact ids."""
    h = hashlib.sha256()
    d = data_dir(cfg)
    for s in SPLITS:
        f = split_file(d, s)
        h.update(s.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# Python's csv module refuses fields over 128 KiB by default; a long document in one cell is legitimate data (it is
# truncated at tokenization), so allow up to 16 MiB and name the file when even that is exceeded.
_CSV_FIELD_LIMIT = 16 * 2**20


def _read_rows(path: Path, text_column: str = "text") -> Iterator[dict]:
    # utf-8-sig: Excel's "CSV UTF-8" starts every file with a BOM, which would otherwise glue onto the first column name.
    n, reader = 1, None
    try:
        if path.suffix == ".txt":  # unlabelled text, one sentence a line (the embedding task's own corpus)
            with open(path, encoding="utf-8-sig") as f:
                for line in f:
                    yield {text_column: line.strip()}
        elif path.suffix == ".csv":
            csv.field_size_limit(_CSV_FIELD_LIMIT)
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = next(reader, [])
                for row in reader:
                    yield dict(zip(header, row))
        else:
            with open(path, encoding="utf-8-sig") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        yield _json_row(line, path, n)
    except UnicodeDecodeError as e:
        raise UserInputError(f"{path}: not UTF-8 text (byte {e.start}); re-save the file as UTF-8") from None
    except csv.Error as e:
        n = reader.line_num if reader is not None else n
        raise UserInputError(f"{path}: line {n}: {e}; fix that row (cells up to {_CSV_FIELD_LIMIT >> 20} MiB)") from None


def _json_row(line: str, path: Path, n: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        raise UserInputError(f"{path}:{n}: not valid JSON; each line must be one JSON object") from None
    if not isinstance(row, dict):
        raise UserInputError(f"{path}:{n}: a JSON {type(row).__name__}, not an object; each line must be one JSON "
                             f"object like {{\"text\": ..., \"label\": ...}}")
    return row


def _read_split(path: Path, cfg: DataCfg, name: str, need_labels: bool = True
                ) -> tuple[list[str], Optional[list], Optional[list[str]]]:
    """(texts, labels, domains); labels None when the task needs none and the file has no label column."""
    texts, labels, domains = [], [], []
    for n, row in enumerate(_read_rows(path, cfg.text_column), 2):
        if n == 2:
            if not need_labels and cfg.label_column not in row:
                labels = None
            for col in (cfg.text_column, cfg.label_column) if labels is not None else (cfg.text_column,):
                if col not in row:
                    raise UserInputError(f"{path}: no column {col[:80]!r} (has {', '.join(shown_names(list(map(str, row)), 8))}); "
                                         f"set data.text_column / data.label_column")
        text, label = row.get(cfg.text_column), row.get(cfg.label_column)
        if text is None or str(text).strip() == "":
            continue
        if labels is not None:
            if label is None or str(label).strip() == "":
                raise UserInputError(f"{path}: row {n - 1} has an empty {cfg.label_column!r}; every row needs a label")
            labels.append(label)
        texts.append(str(text))
        if cfg.domain_column and cfg.domain_column in row:
            domains.append(str(row[cfg.domain_column]))
    if not texts:
        raise UserInputError(f"{path}: the {name} split has no rows with text; add data or point data.source elsewhere")
    return texts, labels, (domains if len(domains) == len(texts) else None)


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


def _to_ids(raw: list, path: Path, label_names: Optional[list[str]], integer: Optional[bool]) -> tuple[np.ndarray, list[str]]:
    """Labels -> class ids. The train split decides the kind (integers 0..C-1, or strings); the other splits must
    use the same kind, so a "0/1" test split is never silently mapped onto a "neg/pos" train split."""
    as_str = [str(x).strip() for x in raw]
    ints = all(_is_int(s) for s in as_str)
    if integer is None:  # the train split
        integer = ints
    elif ints and not integer and set(as_str) <= set(label_names or []):
        ints = False  # string names that happen to look like numbers ("1", "neg"): read them as names
    if ints != integer:
        want = "integers 0..C-1" if integer else f"the train split's names ({', '.join(shown_names(label_names))})"
        raise UserInputError(f"{path}: labels are {'integers' if ints else 'strings'} but the train split's are "
                             f"{'integers' if integer else 'strings'}; use {want} in every split")
    if integer:
        ids = np.array([int(s) for s in as_str], dtype=np.int64)
        if ids.min() < 0:
            raise UserInputError(f"{path}: label {ids.min()} is negative; integer labels must be 0..num_labels-1")
        return ids, label_names or [str(i) for i in range(int(ids.max()) + 1)]
    names = label_names or sorted(set(as_str))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(as_str) - set(index))
    if unknown:
        raise UserInputError(f"{path}: label {unknown[0][:80]!r} does not occur in the train split; every label must "
                             f"be seen in training")
    return np.array([index[s] for s in as_str], dtype=np.int64), names


def declared_names(cfg: DataCfg, directory: Path) -> tuple[Optional[list[str]], str]:
    """The names of integer classes: data.label_names, else the data folder's labels.json (the bundle's own shape,
    {"labels": [name of class 0, ...]}), else none; with where they came from, for error messages. The names live
    beside the data they describe, so the packaged VADER needs no special case and its CSVs (the data's identity in
    the teacher's id) stay as they are."""
    if cfg.label_names is not None:
        return list(cfg.label_names), "data.label_names"
    path = directory / LABELS_FILE
    if not path.is_file():
        return None, ""
    try:
        names = json.loads(path.read_text(encoding="utf-8-sig"))["labels"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        names = None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) and n.strip() for n in names)
            and len(set(names)) == len(names)):
        raise UserInputError(f'{path}: not {{"labels": ["name of class 0", "name of class 1", ...]}} with distinct '
                             f'names; fix it or remove it')
    return names, str(path)


def _named(names: list[str], integer: bool, declared: Optional[list[str]], where: str, path: Path) -> list[str]:
    """The class names of the train split once the declared names (if any) are applied: only integer ids take them."""
    if declared is None:
        return names
    if not integer:
        raise UserInputError(f"{where} names integer classes, but {path}'s labels are already names "
                             f"({', '.join(shown_names(names))}); remove {where}")
    if len(declared) != len(names):
        raise UserInputError(f"{where} has {len(declared)} names but the data has {len(names)} classes (labels "
                             f"0..{len(names) - 1}); give one name per class, class 0 first")
    return declared


def shown_names(names: Optional[list[str]], n: int = 4) -> list[str]:
    names = names or []
    return [x[:40] for x in names[:n]] + (["..."] if len(names) > n else [])


def load_splits(cfg: DataCfg, need_labels: bool = True) -> dict[str, Split]:
    """The three splits. need_labels False (a task that trains on text alone): files without the label column load
    unlabelled (labels all 0, no label names) and only the text column is required."""
    d = data_dir(cfg)
    out: dict[str, Split] = {}
    names: Optional[list[str]] = None
    integer: Optional[bool] = None
    for s in SPLITS:
        path = split_file(d, s)
        texts, raw, domains = _read_split(path, cfg, s, need_labels)
        if raw is None or (s != "train" and names == []):  # one unlabelled split: the run is unlabelled
            out[s] = Split(s, texts, np.zeros(len(texts), dtype=np.int64), domains, [])
            names = []
            continue
        labels, names_s = _to_ids(raw, path, names, integer)
        if s == "train":
            names, integer = names_s, all(_is_int(str(x).strip()) for x in raw)
            if len(np.unique(labels)) < 2:
                raise UserInputError(f"{path}: the train split has a single class ({names[int(labels[0])][:80]}); a "
                                     f"classifier needs at least two")
            missing = sorted(set(range(len(names))) - set(labels.tolist()))
            if missing:  # integer labels with a gap ({1, 2}, {0, 999999}) would make a head with unused classes
                raise UserInputError(f"{path}: integer labels must be 0..C-1 with every class present; "
                                     f"{len(missing)} missing (e.g. {missing[:3]}) below the largest label "
                                     f"{len(names) - 1}; renumber them or use string labels")
            names = _named(names, integer, *declared_names(cfg, d), path)
        elif labels.max() >= len(names):
            raise UserInputError(f"{path}: label {int(labels.max())} is outside the train split's labels 0..{len(names) - 1}")
        out[s] = Split(s, texts, labels, domains, names)
    return out


def num_labels(splits: dict[str, Split]) -> int:
    return len(splits["train"].label_names)


def encode(tokenizer, split: Split, max_seq_len: int) -> list[list[int]]:
    """Token ids per row, unpadded: what `batches` pads; a caller that batches a split every epoch encodes it once."""
    return tokenizer(split.texts, truncation=True, max_length=max_seq_len, padding=False)["input_ids"]


def batches(tokenizer, split: Split, batch_size: int, max_seq_len: int, *, shuffle: bool, seed: int = 0,
            group_by_length: bool = True, encoded: Optional[list[list[int]]] = None
            ) -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """Tokenized batches with dynamic padding. Length-grouped so short tweets are not padded to a long review:
    sort by length within chunks of 50 batches, then shuffle the batch order. Returns (inputs, labels, row_index).
    encoded: `encode(tokenizer, split, max_seq_len)` when the caller has it already."""
    enc = {"input_ids": encode(tokenizer, split, max_seq_len) if encoded is None else encoded}
    lengths = np.array([len(x) for x in enc["input_ids"]])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(split)) if shuffle else np.arange(len(split))
    if group_by_length:
        chunk = batch_size * 50
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in np.array_split(order, max(1, len(order) // chunk))]) \
            if len(order) else order
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(groups)
    pad = tokenizer.pad_token_id or 0
    out = []
    for g in groups:
        width = int(lengths[g].max())
        ids = np.full((len(g), width), pad, dtype=np.int64)
        mask = np.zeros((len(g), width), dtype=np.int64)
        for r, i in enumerate(g):
            row = enc["input_ids"][i]
            ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        out.append(({"input_ids": ids, "attention_mask": mask}, split.labels[g], g))
    return out
