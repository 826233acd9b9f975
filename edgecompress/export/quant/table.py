"""The word-embedding table's bytes as a file stores it, and the file's bytes split into that table and the rest:
one computation for every exporter, so a report can show where a file's bytes go whatever wrote it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

FP32_QPARAMS = 8  # a float32 scale + a float32 zero point per group of a row


def table_entry(rows: int, dim: int, bits: int, *, op: str, scheme: str, group_size: Optional[int] = None,
                qparam_bytes: float = FP32_QPARAMS) -> dict:
    """What an exporter records as details["embedding_table"]: shape, grid, op, and stored_bytes (the packed
    values, rows*dim*bits/8, plus qparam_bytes per group; group_size None = one group per row)."""
    group = group_size or dim
    stored = rows * dim * bits // 8 + round(rows * (dim // group) * qparam_bytes)
    return {"rows": int(rows), "dim": int(dim), "bits": int(bits), "group_size": int(group), "scheme": scheme,
            "op": op, "stored_bytes": int(stored)}


def bytes_by_component(path: Path, table: Optional[dict]) -> dict:
    """{file, embedding_table, rest} in bytes; without a table entry only the file's size is known."""
    total = Path(path).stat().st_size
    if table is None:
        return {"file": total}
    return {"file": total, "embedding_table": table["stored_bytes"], "rest": total - table["stored_bytes"]}
