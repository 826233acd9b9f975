"""The candidates of a fit: student architectures x vocabulary trims x formats, with what each costs on paper.

Torch-free, so `plan` can validate a space and count its candidates in milliseconds. FLOPs are the dense encoder's
multiply-adds x 2 at the bench sequence length: the projections (4 H x H), the FFN (2 H x I) and the attention
scores and mixing (2 S x H) per token per layer; embeddings are lookups, the classifier is negligible.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from edgecompress.errors import UserInputError


MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class Candidate:
    layers: int
    hidden: int
    heads: int
    ffn: int
    min_count: Optional[int]   # vocabulary trimmed to tokens seen this often in the train split; None = whole
    format: str

    @property
    def name(self) -> str:
        vocab = f"-V{self.min_count}" if self.min_count else ""
        return f"L{self.layers}-H{self.hidden}-I{self.ffn}{vocab}-{self.format}"

    def arch(self) -> dict:
        return {"num_hidden_layers": self.layers, "hidden_size": self.hidden, "num_attention_heads": self.heads,
                "intermediate_size": self.ffn}

    def gflops(self, seq_len: int) -> float:
        per_token = 4 * self.hidden ** 2 + 2 * self.hidden * self.ffn + 2 * seq_len * self.hidden
        return round(2 * self.layers * seq_len * per_token / 1e9, 4)

    def encoder_params(self) -> int:
        """Weights of the transformer layers: the capacity a distillation can fill (embeddings are a lookup)."""
        h, i = self.hidden, self.ffn
        return self.layers * (4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h)

    def to_json(self) -> dict:
        return {**asdict(self), "name": self.name}


def space_of(recipe):
    """The recipe's search space (its fit: section, else the defaults), formats defaulting to what it exports."""
    from edgecompress.recipe import FitCfg
    space = recipe.fit or FitCfg()
    return space if space.formats else space.model_copy(update={"formats": list(recipe.export.formats)})


def default_widths(t_hidden: int, head_dim: int) -> list[int]:
    """About 1/3, 1/2 and 2/3 of the teacher's width, in whole heads (at least one)."""
    return sorted({max(1, round(t_hidden * f / head_dim)) * head_dim for f in (1 / 3, 1 / 2, 2 / 3)})


def candidates(space, teacher_config: dict, keep_width: bool = False) -> list[Candidate]:
    """Every combination of the space (recipe.FitCfg) that can be sliced from this teacher, cheapest first. Depths
    and widths left unset scale with the teacher. keep_width: the task's student keeps the teacher's width
    (tasks.TaskSpec.keeps_teacher_width), so the only width is the teacher's."""
    t_hidden, t_heads, t_layers = (teacher_config["hidden_size"], teacher_config["num_attention_heads"],
                                   teacher_config["num_hidden_layers"])
    head_dim = t_hidden // t_heads
    widths = space.widths or ([t_hidden] if keep_width else default_widths(t_hidden, head_dim))
    depths = space.depths or [d for d in (2, 3, 4) if d <= t_layers] or [t_layers]
    narrower = [w for w in widths if w != t_hidden] if keep_width else []
    if narrower:
        raise UserInputError(f"fit.widths: {narrower[0]}: this task's student keeps the teacher's width {t_hidden} "
                             f"(its output is distilled onto the teacher's); leave fit.widths unset or use "
                             f"[{t_hidden}]")
    for w in widths:
        if w % head_dim or w > t_hidden:
            raise UserInputError(f"fit.widths: {w} is not a multiple of the teacher's head size {head_dim} up to its "
                                 f"width {t_hidden}; use whole heads, e.g. {head_dim * max(1, t_heads // 2)}")
    for d in depths:
        if d > t_layers:
            raise UserInputError(f"fit.depths: {d} exceeds the teacher's {t_layers} layers; use at most {t_layers}")
    n = len(depths) * len(widths) * len(space.ffn_ratios) * len(space.vocab_min_counts) * len(space.formats)
    if n > MAX_CANDIDATES:
        raise UserInputError(f"fit: the space has {n} candidates, more than {MAX_CANDIDATES} (each is exported and "
                             f"measured on the device); list fewer depths, widths, ffn_ratios, vocab_min_counts or "
                             f"formats")
    out = [Candidate(d, w, w // head_dim, max(8, int(round(r * w))), m, f)
           for d in depths for w in widths for r in space.ffn_ratios
           for m in space.vocab_min_counts for f in space.formats]
    return sorted(set(out), key=lambda c: (c.gflops(128), c.name))


def at_least(a: dict, b: dict) -> bool:
    """Candidate row `a` is at least as large as `b` in every dimension that costs (depth, width, FFN, vocabulary),
    in the same format. Every budget (latency, file, memory, load) grows with each of them, so a candidate at least
    as large as one that misses a budget misses it too, and one no larger than a candidate that meets every budget
    meets them too: decided without measuring."""
    return a["format"] == b["format"] and all(a[k] >= b[k] for k in ("layers", "hidden", "ffn", "vocab_size"))


CLEAR_MISS = {"p90_ms": 0.10, "load_ms": 0.25, "peak_rss_mb": 0.02, "file_mb": 0.0}


def clearly_misses(measured: dict, budgets: dict[str, float], emulated: bool = False) -> bool:
    """A budget missed by more than its noise margin (CLEAR_MISS)."""
    return bool(misses(measured, {k: v * (1 + CLEAR_MISS.get(k, 0.0)) for k, v in budgets.items()}, emulated))


def judged(budgets: dict[str, float], emulated: bool) -> set[str]:
    """The budget keys a measurement on this target is judged against (bench's rule: profiles.EMULATION_SKEWED)."""
    from edgecompress.device.protocol import EMULATION_SKEWED
    return {k for k in budgets if not (emulated and k in EMULATION_SKEWED)}


def misses(measured: dict, budgets: dict[str, float], emulated: bool = False) -> list[str]:
    """The budgets a measurement misses, as 'p90_ms 5.1 > 4' lines; under emulation size and memory only."""
    out = []
    keys = judged(budgets, emulated)
    for key, limit in budgets.items():
        if key not in keys:
            continue
        value = measured.get(key)
        if value is not None and value > limit:
            out.append(f"{key} {value:.3g} > {limit:g}")
    return out
