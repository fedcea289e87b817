"""The comparison's plan and its finished rows: which cells a recipe asks
for (`expand`), which adaptation option a strategy's "best" cells take
(`resolve_best`), which finished rows belong to which tier, and
results.jsonl itself. Read by the runner (compare.py) and by the reports
(evaluation/compare_report.py) alike, so neither imports the other."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .config import CompareConfig
from .errors import DataError


@dataclass(frozen=True)
class Cell:
    strategy: str  # a pretrain entry, or "scratch"
    lang: str
    tune: str  # all | emb_enc | emb, or "best" until the option runs decide it
    size: int  # adapt sentences; 0 = zero-shot
    draw: int  # 0 = the whole set (or set + extra); 1.. = random subsets
    seed: int
    pretrain_tokens: int = 0  # 0 = the run's final model; N = its snapshot at N target tokens

    @property
    def id(self) -> str:
        base = f"{self.strategy}.{self.lang}.{self.tune}.n{self.size}.d{self.draw}.s{self.seed}"
        return base + (f".p{snapshot_label(self.pretrain_tokens)}" if self.pretrain_tokens else "")


def snapshot_label(tokens: int) -> str:
    """10000000 -> '10M' (a cell id part and a plot label)."""
    return f"{tokens // 1_000_000}M" if tokens % 1_000_000 == 0 else str(tokens)


# --- the plan ---------------------------------------------------------------------


def expand(cfg: CompareConfig) -> list[tuple[Cell, str]]:
    """Every (cell, tier) in run order: tiers in recipe order, seeds
    outermost within a tier (a first seed of everything comes first)."""
    out = []
    for tier in cfg.tiers:
        for seed in tier.seeds:
            for tokens in tier.pretrain_tokens or [0]:
                for strategy in tier.strategies:
                    for lang in tier.targets or cfg.targets:
                        for tune in tier.tunes:
                            tune = "all" if strategy == "scratch" else tune  # nothing pre-trained to keep fixed
                            for size in tier.sizes:
                                draws = range(1, tier.draws + 1) if 0 < size < cfg.full_size else [0]
                                for draw in draws:
                                    out.append((Cell(strategy, lang, tune, size, draw, seed, tokens), tier.name))
    return out


def option_scores(cfg: CompareConfig, rows: list[dict], strategy: str) -> dict[str, float]:
    """Mean validation score of each adaptation option over the targets, from
    the strategy's full-size runs at the first seed of the tiers that try
    several options (only when every such cell has finished and every option
    has the same targets)."""
    option_tiers = [t for t in cfg.tiers if len(t.tunes) > 1 and not t.pretrain_tokens and strategy in t.strategies]
    seeds = [x for t in option_tiers for x in t.seeds]
    if not seeds:
        return {}
    # Every option cell must have finished: with several grid processes they finish out
    # of order, and two options of three are not a choice.
    expected = {(tune, lang) for t in option_tiers if cfg.full_size in t.sizes for lang in t.targets or cfg.targets for tune in t.tunes}
    full = [
        r for r in rows
        if r["strategy"] == strategy and r["size"] == cfg.full_size and r["draw"] == 0 and r["seed"] == min(seeds)
        and r["valid_score"] is not None and not r.get("pretrain_tokens")  # options are picked on the final models
    ]
    by_tune: dict[str, dict[str, float]] = {}
    for r in full:
        by_tune.setdefault(r["tune"], {})[r["lang"]] = r["valid_score"]
    if not expected <= {(tune, lang) for tune, v in by_tune.items() for lang in v}:
        return {}
    langs = [set(v) for v in by_tune.values()]
    if len(by_tune) < 2 or any(x != langs[0] for x in langs):
        return {}
    return {t: sum(v.values()) / len(v) for t, v in sorted(by_tune.items())}


def option_source(cfg: CompareConfig, strategy: str) -> str | None:
    """Whose option runs decide `strategy`'s 'best' cells: its own, else its
    best_tune_from entry's; None when no tier runs options for either."""
    for source in (strategy, cfg.best_tune_from.get(strategy, strategy)):
        if any(len(t.tunes) > 1 and not t.pretrain_tokens and source in t.strategies for t in cfg.tiers):
            return source
    return None


def resolve_best(cfg: CompareConfig, rows: list[dict], strategy: str) -> str | None:
    """The adaptation option with the best mean validation score (higher is
    better) in `option_scores`, the strategy's own or, for a strategy with
    no option runs, those of `best_tune_from[strategy]`. None: not run yet."""
    if strategy == "scratch":
        return "all"
    source = option_source(cfg, strategy)
    scores = option_scores(cfg, rows, source) if source else {}
    return max(scores, key=scores.get) if scores else None


# --- results.jsonl ------------------------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    """Finished cells. A torn last line (killed mid-write) is ignored."""
    rows = []
    if not path.is_file():
        return rows
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028 may occur inside a row
    while lines and not lines[-1]:
        lines.pop()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise DataError(f"{path}: line {i + 1} is not JSON; fix or remove it") from None
    return rows


def append_row(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- tiers ------------------------------------------------------------------------


def tier_rows(cfg: CompareConfig, rows: list[dict]) -> dict[str, list[dict]]:
    """The finished rows of each tier, from the recipe's plan (a 'best'
    option resolved as the runner resolves it), whatever the rows record."""
    by_id = {r["id"]: r for r in rows}
    best = {s: resolve_best(cfg, rows, s) for s in {c.strategy for c, _ in expand(cfg)}}
    out: dict[str, list[dict]] = {t.name: [] for t in cfg.tiers}
    for cell, tier in expand(cfg):
        if cell.tune == "best":
            if best.get(cell.strategy) is None:
                continue
            cell = dataclasses.replace(cell, tune=best[cell.strategy])
        row = by_id.get(cell.id)
        if row is not None and row not in out[tier]:
            out[tier].append(row)
    return out


def plan_size(cfg: CompareConfig) -> dict[str, int]:
    """Cells each tier asks for."""
    seen = {(cell, tier) for cell, tier in expand(cfg)}
    return {t.name: sum(1 for _, tier in seen if tier == t.name) for t in cfg.tiers}


def _rewrite_rows(path: Path, rows: list[dict]) -> None:
    """Persist tier memberships added to finished rows (atomic rewrite)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
