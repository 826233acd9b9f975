"""Rebuild the packaged VADER sentiment splits from the vaderSentiment 3.3.2 sdist.

Usage (needs PyPI once, nothing else):
    pip download --no-binary :all: --no-deps vaderSentiment==3.3.2 -d /tmp/vader
    python -m edgecompress.data.vader.rebuild /tmp/vader/vaderSentiment-3.3.2.tar.gz

The sdist carries `additional_resources/hutto_ICWSM_2014.tar.gz`: ~23.7k sentences, each rated -4..+4 by
human judges (mean score). Binary sentiment: score >= +1 positive, <= -1 negative, the rest (weak or neutral)
dropped. The split is stratified by (domain, label) with a fixed seed so every domain keeps its balance in
every split. Standard library only, so the script reproduces the committed files byte for byte.
"""
from __future__ import annotations

import csv
import io
import json
import random
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

SEED = 20140601  # ICWSM-14; any fixed value works, this one is recorded in README.md
FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
DOMAINS = {
    "tweets_GroundTruth.txt": "tweets",
    "movieReviewSnippets_GroundTruth.txt": "movies",
    "amazonReviewSnippets_GroundTruth.txt": "amazon",
    "nytEditorialSnippets_GroundTruth.txt": "nyt",
}
POSITIVE_MIN, NEGATIVE_MAX = 1.0, -1.0


def read_rows(sdist: Path) -> list[dict]:
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_bytes = outer.extractfile(member).read()
    rows = []
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for m in sorted(inner.getmembers(), key=lambda m: m.name):
            domain = DOMAINS.get(Path(m.name).name)
            if domain is None:
                continue
            text = inner.extractfile(m).read().decode("utf-8")
            for line in text.splitlines():
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                score = float(parts[1])
                sentence = "\t".join(parts[2:]).strip()
                if not sentence or NEGATIVE_MAX < score < POSITIVE_MIN:
                    continue
                rows.append({"id": f"{domain}-{parts[0]}", "text": sentence,
                             "label": int(score >= POSITIVE_MIN), "domain": domain, "score": f"{score:.4f}"})
    return rows


def split(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["domain"], r["label"])].append(r)
    rng = random.Random(SEED)
    out: dict[str, list[dict]] = {k: [] for k in FRACTIONS}
    for key in sorted(groups):
        g = groups[key]
        rng.shuffle(g)
        n_val = round(len(g) * FRACTIONS["validation"])
        n_test = round(len(g) * FRACTIONS["test"])
        out["validation"] += g[:n_val]
        out["test"] += g[n_val:n_val + n_test]
        out["train"] += g[n_val + n_test:]
    for part in out.values():
        rng.shuffle(part)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(__file__).parent
    parts = split(read_rows(Path(argv[0])))
    for name, rows in parts.items():
        with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "text", "label", "domain", "score"], lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        print(f"{name}: {len(rows)} rows")
    # The CSVs keep integer labels (their bytes are the data's identity in artifact ids); the names ride beside them.
    (out_dir / "labels.json").write_text(json.dumps({"labels": ["negative", "positive"]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
