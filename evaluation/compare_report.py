"""The comparison's summary and plots, rebuilt from results.jsonl alone.

    python -m evaluation.compare_report recipes/compare.yaml

writes RESULTS/summary.md (the paper's claims answered by evaluation/claims.py),
RESULTS/significance.json and the plots. Every number in the summary comes
from a results.jsonl row (tests check that), and every row's BLEU re-scores
from its committed hypothesis file with plain sacrebleu against the pack's
reference.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import statistics
from collections import defaultdict
from pathlib import Path

from data_prep.prepare import read_protected
from data_prep.sources import read_lines
from evaluation.claims import Claim, answer_claims, claims_markdown, finite_score, option_pairs, tier_pairs, ulr_tier
from mtmeta.compare_plan import option_scores, plan_size, snapshot_label, tier_rows
from mtmeta.errors import DataError
from mtmeta.safe_io import sha256_file
from mtmeta.scoring import paired_bootstrap, write_json

METRICS = (("bleu", "BLEU"), ("chrf", "chrF"), ("tok_bleu", "tok-BLEU"))


def mean_std(values: list[float]) -> tuple[float, float, int]:
    if not values:
        return float("nan"), float("nan"), 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def fmt(values: list[float], show_n: bool = False) -> str:
    m, s, n = mean_std(values)
    if not n:
        return "–"
    text = f"{m:.2f} ± {s:.2f}" if n > 1 else f"{m:.2f}"
    return text + (f" (n={n})" if show_n else "")


def in_tier(cfg, rows: list[dict], tier: str) -> list[dict]:
    return tier_rows(cfg, rows).get(tier, [])


def _ordered(values, preferred):
    """`values` once each: those in `preferred` in its order, then the rest sorted."""
    preferred = list(dict.fromkeys(preferred))
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def references(cfg, row: dict) -> list[str]:
    """The row's reference lines: from the prepared folder, or (a clean
    checkout without work/) from the pack the recipe names."""
    try:
        return read_protected(cfg.prepare.output, row["lang"], "test", row["test"]).tgt[: row["sentences"]]
    except DataError:
        for src in cfg.prepare.sources:
            path = Path(src.path) / row["reference"]
            if src.type == "pack" and path.is_file():
                return read_lines(path)[: row["sentences"]]
        raise


def paired_tests(cfg, pairs: list[tuple[dict, dict]], results_dir: Path, cache: dict | None = None) -> list[dict]:
    """Paired bootstrap of each (system row, baseline row) on its test set.
    A test in `cache` (an earlier significance.json) is reused when all it
    was computed from is the same: the two rows, their hypothesis files and
    the references (by SHA-256), the BLEU signature, the sample count (the
    resampling seed is fixed in mtmeta.scoring), and the rows' scores still
    equal the ones it tested. Every report would otherwise spend ~5 s per
    test again."""
    out = []
    for sys_row, base_row in pairs:
        hs, hb = results_dir / sys_row["hypotheses"], results_dir / base_row["hypotheses"]
        refs = references(cfg, sys_row)
        inputs = {"system": sha256_file(hs), "baseline": sha256_file(hb),
                  "references": hashlib.sha256("\n".join(refs).encode("utf-8")).hexdigest(),
                  "signature": sys_row.get("bleu_signature"), "samples": cfg.bootstrap_samples}
        test = (cache or {}).get(_cache_key(sys_row["id"], base_row["id"], inputs))
        if test is None or any(test[m]["system"] != sys_row[m] or test[m]["baseline"] != base_row[m] for m in ("bleu", "chrf")):
            test = {"lang": sys_row["lang"], "seed": sys_row["seed"], "system": sys_row["id"], "baseline": base_row["id"],
                    "inputs": inputs, **paired_bootstrap(read_lines(hb), read_lines(hs), refs, samples=cfg.bootstrap_samples)}
        out.append(test)
    return out


def _cache_key(system: str, baseline: str, inputs: dict) -> tuple:
    return system, baseline, json.dumps(inputs, sort_keys=True)


def read_test_cache(path: Path) -> dict:
    """The tests of an earlier significance.json, by `_cache_key`; entries
    of another shape (an older format) are left out, to be computed again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for tests in data.values() if isinstance(data, dict) else []:
        for t in tests if isinstance(tests, list) else []:
            try:
                if isinstance(t["inputs"], dict) and all(isinstance(t[m][k], (int, float)) for m in ("bleu", "chrf") for k in ("system", "baseline")):
                    out[_cache_key(t["system"], t["baseline"], t["inputs"])] = t
            except (KeyError, TypeError):
                continue
    return out


def significance(cfg, rows: list[dict], results_dir: Path, tier: str = "headline", system: str = "", baseline: str = "",
                 cache: dict | None = None) -> list[dict]:
    """Paired bootstrap, system vs baseline (the recipe's unless given), per
    language and seed, on a tier's full-set cells (the headline: each
    strategy with its own chosen option)."""
    pairs = tier_pairs(cfg, rows, tier, system or cfg.system, baseline or cfg.baseline)
    return paired_tests(cfg, pairs, results_dir, cache)


def seed_twins(cfg) -> list[tuple[str, str]]:
    """(reference run, the same run with a later seed): pretrain entries equal
    but for the seed and the budget (pre-training variance at a smaller
    budget). Each later-seed entry gets one reference: the first such entry
    of the recipe with a lower seed."""
    def key(tr):
        return dataclasses.asdict(dataclasses.replace(tr, seed=0, max_train_tokens=0, max_minutes=0.0, max_steps=0, output=""))
    out = []
    for b, tb in cfg.pretrain.items():
        ref = next((a for a, ta in cfg.pretrain.items() if ta.seed < tb.seed and key(ta) == key(tb)), None)
        if ref is not None:
            out.append((ref, b))
    return out


def seed_lines(cfg, rows: list[dict], tier) -> list[str]:
    """How far a second pre-training seed alone moves each target's BLEU, for
    the seed pairs a tier adapts (full set, its first adaptation seed): the
    scale to read the tier's other differences against."""
    L = []
    for a, b in seed_twins(cfg):
        if a not in tier.strategies or b not in tier.strategies:
            continue
        bleu = {(r["strategy"], r["lang"]): r["bleu"] for r in rows
                if r["strategy"] in (a, b) and r["seed"] == min(tier.seeds) and r["size"] == cfg.full_size and r["draw"] == 0
                and finite_score(r.get("bleu"))}
        both = [lang for lang in cfg.targets if (a, lang) in bleu and (b, lang) in bleu]
        if both:
            diffs = [bleu[(b, lang)] - bleu[(a, lang)] for lang in both]
            L.append(f"- Pre-training seed, {a} → {b} (the same run with pre-training seed {cfg.pretrain[b].seed}): BLEU "
                     + ", ".join(f"{lang} {d:+.2f}" for lang, d in zip(both, diffs))
                     + f"; mean absolute difference {statistics.fmean(abs(d) for d in diffs):.2f} BLEU.")
    return L + [""] if L else []


def _mark(tests: list[dict], lang: str, metric: str) -> str:
    """'*': system significantly better (p < 0.05) on every seed tested;
    '(-)': significantly worse on every seed; '' otherwise."""
    ts = [t for t in tests if t["lang"] == lang]
    if not ts:
        return ""
    better = all(t[metric]["p_value"] < 0.05 and t[metric]["system"] > t[metric]["baseline"] for t in ts)
    worse = all(t[metric]["p_value"] < 0.05 and t[metric]["system"] < t[metric]["baseline"] for t in ts)
    return "*" if better else "(-)" if worse else ""


def table(rows: list[dict], row_key, col_key, metric: str, row_order=(), col_order=(), mark=None, expect_n: int = 0) -> list[str]:
    cells = defaultdict(list)
    for r in rows:
        cells[(row_key(r), col_key(r))].append(r[metric])
    rks = _ordered({k[0] for k in cells}, row_order)
    cks = _ordered({k[1] for k in cells}, col_order)
    lines = ["| | " + " | ".join(str(c) for c in cks) + " |", "|---|" + "---:|" * len(cks)]
    for rk in rks:
        vals = []
        for ck in cks:
            got = cells.get((rk, ck), [])
            v = fmt(got, show_n=bool(expect_n) and 0 < len(got) < expect_n)
            if mark and (rk, ck) in cells:
                v += mark(rk, ck)
            vals.append(v)
        lines.append(f"| {rk} | " + " | ".join(vals) + " |")
    return lines


def summary_markdown(cfg, rows: list[dict], tests: list[dict], notes: str = "", claims: list[Claim] | None = None) -> str:
    strategies = [s for t in cfg.tiers for s in t.strategies]
    strat_order = list(dict.fromkeys(strategies))
    langs = cfg.targets
    L = [f"# {cfg.name}: adaptation strategies compared", ""]
    L += [
        f"{len(rows)} runs from `results.jsonl`. BLEU and chrF are sacreBLEU on the "
        + ("full test sets " if not cfg.evaluate.max_sentences else f"first {cfg.evaluate.max_sentences} sentences of the test sets ")
        + 
        "(detokenised, signatures below). **tok-BLEU** is BLEU on Moses-tokenised text (multi-bleu style), "
        "the kind the MetaNMT paper reports: set it beside the paper's table, never beside sacreBLEU.",
        "",
    ]
    sig_rows = {}
    for r in rows:
        sig_rows.setdefault("BLEU", r["bleu_signature"])
        sig_rows.setdefault("chrF", r["chrf_signature"])
        sig_rows.setdefault("tok-BLEU", r["tok_bleu_signature"])
    planned = plan_size(cfg)
    L += ["## Coverage", "", "| tier | cells finished | cells planned |", "|---|---:|---:|"]
    for tier in cfg.tiers:
        L.append(f"| {tier.name} | {len(in_tier(cfg, rows, tier.name))} | {planned[tier.name]} |")
    L += ["", "A tier with fewer finished cells than planned is incomplete: `mtmeta compare` on the same recipe finishes it.", ""]
    pre = {}
    for r in rows:
        if r.get("pretrain"):
            pre[r["strategy"]] = r["pretrain"]
    if pre:
        L += ["## Pre-training budget", "", "| strategy | method | embedding | updates | tokens processed | training minutes | source valid NLL |", "|---|---|---|---:|---:|---:|---:|"]
        for name in _ordered(set(pre), strat_order):
            p = pre[name]
            method = p["strategy"] + (f" ({p['variant']})" if p.get("variant") else "")
            nll = p.get("source_valid_nll")
            L.append(f"| {name} | {method} | {p['embedding']} | {p['steps']} | {p['tokens']:,} | {p['train_minutes']:.1f} | {'–' if nll is None else f'{nll:.3f}'} |")
        shas = defaultdict(set)
        for r in rows:
            if r.get("pretrain") and r["pretrain"].get("checkpoint_sha256"):
                shas[r["strategy"]].add(r["pretrain"]["checkpoint_sha256"])
        for name, hashes in sorted(shas.items()):
            if len(hashes) > 1:
                L.append(f"\n**Warning:** rows of {name} come from {len(hashes)} different pre-trained checkpoints.")
        budgets = {json.dumps(p["budget"], sort_keys=True) for p in pre.values()}
        L += ["", f"Budget per strategy: {'; '.join(sorted(budgets))} (tokens = target tokens of forward/backward work, both MetaNMT batches counted)."]
        L.append("")
    head = in_tier(cfg, rows, "headline")
    if head:
        tunes = {r["strategy"]: r["tune"] for r in head}
        twins = seed_twins(cfg)
        seeds = max((len(t.seeds) for t in cfg.tiers if t.name == "headline"), default=1)
        L += [f"## Headline: {cfg.full_size} sentences, each strategy's best option (mean ± std over {seeds} adaptation seeds)", ""]
        how = []
        for k, v in tunes.items():
            src = cfg.best_tune_from.get(k)
            how.append(f"{k} → `{v}`" + (" (no pre-trained part to freeze)" if k == "scratch" else f" (as {src})" if src and not option_scores(cfg, rows, k) else ""))
        L.append("Option per strategy, picked on validation, never on test: " + ", ".join(how) + ".")
        L.append(
            "Seeds vary the adaptation (new embeddings, batch order), not the pre-training: each strategy is pre-trained once, "
            "so neither the std nor the bootstrap measures pre-training variance"
            + (" (a second pre-training seed at a smaller budget: " + ", ".join(f"`{b}`" for _, b in twins) + ", below)" if twins else "")
            + ". A cell shows `(n=k)` while fewer seeds than planned are finished."
        )
        L.append(f"`*` {cfg.system} significantly above {cfg.baseline} (paired bootstrap, p < 0.05) on every seed tested; `(-)` significantly below. "
                 "What a mark tests: whether these two adapted models would keep their order on other sentences like the test set's "
                 "(the bootstrap resamples test sentences). What it does not test: whether another adaptation seed, another "
                 "pre-training run or another domain would order them the same way; the ± std over seeds speaks to the first only.")
        L.append("")
        for metric, label in METRICS:
            mark = None
            if metric in ("bleu", "chrf"):
                mark = lambda rk, ck, m=metric: _mark(tests, ck, m) if rk == cfg.system else ""  # noqa: E731
            L += [f"### {label}", ""]
            head_order = [x for t in cfg.tiers if t.name == "headline" for x in t.strategies] + strat_order
            L += table(head, lambda r: r["strategy"], lambda r: r["lang"], metric, head_order, langs, mark, expect_n=seeds)
            L.append("")
    if claims:
        L += claims_markdown(claims, f"the first {cfg.evaluate.max_sentences} sentences of the test sets" if cfg.evaluate.max_sentences else "the full test sets")
    for tier in cfg.tiers:
        if tier.name == "headline":
            continue
        trows = in_tier(cfg, rows, tier.name)
        if not trows:
            continue
        if len(tier.pretrain_tokens) > 1:  # adapted quality against the pre-training budget
            L += [f"## {tier.name}: adapted scores against pre-training tokens", "",
                  "Each pre-training run's weights-only snapshot after that many target tokens, adapted like the final "
                  "models; the learning rate is a function of tokens, so a snapshot is the model a run with that "
                  "budget would have ended with. Plot: `budget.png`.", ""]
            for metric, label in (("valid_score", f"validation {cfg.adapt.select_metric} (adapt-valid, greedy)"),) + METRICS[:2]:
                L += [f"### {label}", ""]
                L += table(trows, lambda r: f"{r['strategy']} {r['lang']}", lambda r: snapshot_label(r["pretrain_tokens"]), metric,
                           [f"{s} {x}" for x in langs for s in tier.strategies],
                           [snapshot_label(n) for n in sorted(tier.pretrain_tokens)])
                L.append("")
        elif tier.pretrain_tokens:  # e.g. ablations at a smaller budget, each with its references
            n = tier.pretrain_tokens[0]
            L += [f"## {tier.name}: every strategy at {snapshot_label(n)} target tokens of pre-training", "",
                  "All rows adapt the runs' snapshots at the same token count, so strategies trained with a "
                  "smaller budget (ablations) are compared with references at that budget.", ""]
            for metric, label in METRICS[:2]:
                L += [f"### {label}", ""]
                L += table(trows, lambda r: r["strategy"], lambda r: r["lang"], metric, tier.strategies, langs)
                L.append("")
            L += seed_lines(cfg, trows, tier)
        elif len(tier.sizes) > 1:  # learning curves
            L += [f"## {tier.name}: BLEU / chrF by adapt-set size (mean ± std over draws)", ""]
            for metric, label in METRICS[:2]:
                L += [f"### {label}", ""]
                L += table(
                    trows, lambda r: f"{r['strategy']} {r['lang']}", lambda r: r["size"], metric,
                    [f"{s} {x}" for x in langs for s in strat_order], sorted({r["size"] for r in trows}),
                )
                L.append("")
        elif len(tier.tunes) > 1:  # adaptation options
            L += [f"## {tier.name}: adaptation options", ""]
            for metric, label in METRICS[:2]:
                L += [f"### {label}", ""]
                L += table(trows, lambda r: f"{r['strategy']} / {r['tune']}", lambda r: r["lang"], metric,
                           [f"{s} / {t}" for s in tier.strategies for t in tier.tunes], langs)
                L.append("")
            L += [f"Mean validation score over the targets ({cfg.adapt.select_metric}; higher is better), what picks each strategy's headline option:", ""]
            for strat in tier.strategies:
                scores = option_scores(cfg, rows, strat)
                if scores:
                    L.append(f"- {strat}: " + ", ".join(f"`{t}` {v:.4f}" for t, v in scores.items()))
            L.append("")
        else:
            L += [f"## {tier.name}", ""]
            for metric, label in METRICS[:2]:
                L += [f"### {label}", ""]
                L += table(trows, lambda r: r["strategy"], lambda r: r["lang"], metric, tier.strategies, langs)
                L.append("")
    if tests:
        L += ["## Paired bootstrap", "", f"{cfg.system} vs {cfg.baseline}, {tests[0]['samples']} resamples (sacreBLEU).", ""]
        L += ["| language | seed | BLEU base → system | p | chrF base → system | p |", "|---|---:|---:|---:|---:|---:|"]
        for t in tests:
            b, c = t["bleu"], t["chrf"]
            L.append(f"| {t['lang']} | {t['seed']} | {b['baseline']:.2f} → {b['system']:.2f} | {b['p_value']:.3f} | {c['baseline']:.2f} → {c['system']:.2f} | {c['p_value']:.3f} |")
        L.append("")
    adapted = [r for r in rows if r["size"] and r.get("adapt_best_step") is not None]
    if adapted:
        last = sum(r["adapt_best_step"] == r["adapt_steps"] for r in adapted)
        early = sum(bool(r.get("adapt_stopped_early")) for r in adapted)
        L += ["## Adaptation to convergence", "",
              f"{len(adapted)} adapted cells (step budget {cfg.adapt.max_steps}, validation every {cfg.adapt.validate_every} "
              f"steps, patience {cfg.adapt.patience}): {early} stopped early; in {last} the best checkpoint was the last one "
              "(there the step budget, not validation, ended the run).", ""]
    notes_fixed = [
        "- Size 0 (zero-shot) cells fine-tune nothing, but the new language's vocabulary and ULR queries are built from the source side of its full adapt set (and the queries aligned with its parallel sentences).",
        "- Sizes above the adapt set add the language's adapt-extra WMT sets in file-name order, minus any pair with a side in its test or validation sets.",
    ]
    if cfg.evaluate.max_sentences:
        notes_fixed.append(f"- Test sets are cut to their first {cfg.evaluate.max_sentences} sentences (`evaluate.max_sentences`): not the full test sets.")
    L += ["## Notes on the cells", ""] + notes_fixed + [""]
    L += ["## Signatures", ""] + [f"- {k}: `{v}`" for k, v in sig_rows.items()] + [""]
    L += [
        "## Re-scoring",
        "",
        "Every row names its hypothesis file (under this folder) and its reference (under the pack), e.g.",
        "",
        f"    sacrebleu PACK/{rows[0]['reference']} -i {Path(cfg.results).as_posix()}/{rows[0]['hypotheses']} -m bleu chrf -w 2",
        "",
        "and every row at once (exit status 1 if any disagrees):",
        "",
        f"    python -m evaluation.rescore {Path(cfg.results).as_posix()} --pack PACK",
        "",
    ]
    if notes:
        L += [notes.strip(), ""]
    return "\n".join(L)


def plot_learning_curves(cfg, rows: list[dict], path: Path) -> bool:
    # before the import, which itself logs: fairseq leaves the root logger at DEBUG
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = [t for t in cfg.tiers if len(t.sizes) > 1]
    curve = list({r["id"]: r for t in tiers for r in in_tier(cfg, rows, t.name)}.values())  # a row once, whatever its tiers
    if not curve:
        return False
    langs = _ordered({r["lang"] for r in curve}, cfg.targets)
    strategies = _ordered({r["strategy"] for r in curve}, [s for t in tiers for s in t.strategies])
    fig, axes = plt.subplots(2, len(langs), figsize=(4.2 * len(langs), 6.4), squeeze=False)
    for j, lang in enumerate(langs):
        for i, (metric, label) in enumerate(METRICS[:2]):
            ax = axes[i][j]
            for s in strategies:
                pts = defaultdict(list)
                for r in curve:
                    if r["lang"] == lang and r["strategy"] == s:
                        pts[r["size"]].append(r[metric])
                if not pts:
                    continue
                xs = sorted(pts)
                ms = [mean_std(pts[x])[0] for x in xs]
                ss = [mean_std(pts[x])[1] for x in xs]
                ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=s)
            ax.set_xscale("symlog", linthresh=100)
            sizes = sorted({r["size"] for r in curve if r["lang"] == lang})
            ax.set_xticks(sizes, [str(x) for x in sizes])
            ax.minorticks_off()
            ax.set_title(f"{lang}-en {label}")
            ax.set_xlabel("adapt-set sentences (0 = zero-shot)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"{cfg.name}: learning curves (mean ± std over draws and seeds; " + ("full test sets)" if not cfg.evaluate.max_sentences else f"first {cfg.evaluate.max_sentences} test sentences)"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_budget(cfg, rows: list[dict], path: Path) -> bool:
    """Adapted validation BLEU, validation score and test BLEU against
    pre-training tokens, one line per strategy, a column per target (tiers
    with several pretrain_tokens)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = [t for t in cfg.tiers if len(t.pretrain_tokens) > 1]
    pts_rows = list({r["id"]: r for t in tiers for r in in_tier(cfg, rows, t.name)}.values())
    if not pts_rows:
        return False
    langs = _ordered({r["lang"] for r in pts_rows}, cfg.targets)
    strategies = _ordered({r["strategy"] for r in pts_rows}, [s for t in tiers for s in t.strategies])
    panels = (("valid_bleu", "adapt-valid BLEU (greedy)"), ("valid_score", f"adapt-valid {cfg.adapt.select_metric}"), ("bleu", "test BLEU"))
    fig, axes = plt.subplots(len(panels), len(langs), figsize=(4.6 * len(langs), 3.4 * len(panels)), squeeze=False)
    for j, lang in enumerate(langs):
        for i, (metric, label) in enumerate(panels):
            ax = axes[i][j]
            for s in strategies:
                by = defaultdict(list)
                for r in pts_rows:
                    if r["lang"] == lang and r["strategy"] == s and r.get(metric) is not None:
                        by[r["pretrain_tokens"]].append(r[metric])
                if by:
                    xs = sorted(by)
                    ax.errorbar([x / 1e6 for x in xs], [mean_std(by[x])[0] for x in xs], yerr=[mean_std(by[x])[1] for x in xs],
                                marker="o", capsize=3, label=s)
            ax.set_title(f"{lang}-en: {label}")
            ax.set_xlabel("pre-training target tokens (millions)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    # The legend on the first panel with lines (rows made before valid_bleu leave the first row empty).
    next((ax for row in axes for ax in row if ax.lines), axes[0][0]).legend()
    fig.suptitle(f"{cfg.name}: adapted quality against the pre-training budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_headline(cfg, rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = in_tier(cfg, rows, "headline")
    if not head:
        return False
    langs = _ordered({r["lang"] for r in head}, cfg.targets)
    order = [s for t in cfg.tiers if t.name == "headline" for s in t.strategies] + [s for t in cfg.tiers for s in t.strategies]
    strategies = _ordered({r["strategy"] for r in head}, order)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(strategies)
    for ax, (metric, label) in zip(axes, METRICS[:2]):
        for k, s in enumerate(strategies):
            ms, ss = [], []
            for lang in langs:
                m, sd, _ = mean_std([r[metric] for r in head if r["lang"] == lang and r["strategy"] == s])
                ms.append(m)
                ss.append(sd)
            ax.bar([j + k * width for j in range(len(langs))], ms, width, yerr=ss, capsize=2, label=s)
        ax.set_xticks([j + width * (len(strategies) - 1) / 2 for j in range(len(langs))], [f"{x}-en" for x in langs])
        ax.set_ylabel(label)
        ax.set_title(f"{label}, full adapt set (mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(cfg, rows: list[dict], log=print) -> dict:
    results = Path(cfg.results)
    cache = read_test_cache(results / "significance.json")
    tests = significance(cfg, rows, results, cache=cache)
    found = ulr_tier(cfg)  # claim 5: the system beside its twin pre-trained without ULR
    ulr_tests = significance(cfg, rows, results, tier=found[0], baseline=found[1], cache=cache) if found else []
    option_tests = paired_tests(cfg, option_pairs(cfg, rows), results, cache)  # claim 3: emb_enc against its strongest rival
    write_json({"tests": tests, "ulr_tests": ulr_tests, "option_tests": option_tests}, results / "significance.json")
    notes_path = results / "NOTES.md"
    notes = notes_path.read_text(encoding="utf-8") if notes_path.is_file() else ""
    summary = results / "summary.md"
    tmp = summary.with_name(summary.name + ".tmp")
    claims = answer_claims(cfg, rows, tests, ulr_tests, option_tests)
    tmp.write_text(summary_markdown(cfg, rows, tests, notes, claims), encoding="utf-8")
    tmp.replace(summary)
    plots = {}
    if plot_learning_curves(cfg, rows, results / "learning_curves.png"):
        plots["learning_curves"] = str(results / "learning_curves.png")
    if plot_budget(cfg, rows, results / "budget.png"):
        plots["budget"] = str(results / "budget.png")
    if plot_headline(cfg, rows, results / "headline_bars.png"):
        plots["headline"] = str(results / "headline_bars.png")
    return {"summary": str(summary), "significance": str(results / "significance.json"), **plots}


def main(argv=None) -> int:
    from mtmeta.compare_plan import load_rows
    from mtmeta.config import load_compare_yaml

    ap = argparse.ArgumentParser(description="Rebuild a comparison's summary and plots from its results.jsonl")
    ap.add_argument("recipe")
    args = ap.parse_args(argv)
    cfg = load_compare_yaml(args.recipe)
    rows = load_rows(Path(cfg.results) / "results.jsonl")
    print(json.dumps(write_report(cfg, rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
