"""The MetaNMT paper's five claims, each answered from the comparison's rows:
holds / does not hold / cannot tell, with the numbers that decide it and the
rule that turned them into the answer.

The rules are fixed here, before the final rows exist, so that no answer is
chosen after seeing them, and they weigh evidence the same way in both
directions: a claim **holds** or **does not hold** only when paired bootstrap
tests (p < 0.05 on every seed), a fitted trend (± 2 standard errors) or the
spread over adaptation seeds (± 1 std) separate the two sides; otherwise,
and while a claim's cells are unfinished, the answer is **cannot tell**.

Claims are stated for `cfg.system` (MetaNMT) against `cfg.baseline`
(multitask); claim 3 tests `emb_enc` against the strongest other option;
claim 5 tests the system against its twin pre-trained without ULR
(`ulr_twin`), in a tier that adapts both. The paired bootstrap tests are run
by evaluation/compare_report.py from the pairs this module names.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from mtmeta.compare_plan import expand, option_scores, snapshot_label, tier_rows

HOLDS, FAILS, UNSURE = "holds", "does not hold", "cannot tell"
HEADLINE = "headline"
EMB_ENC = "emb_enc"  # the paper's best option: source embeddings + encoder
DISTANT = "ko"  # claim 4's language


@dataclass
class Claim:
    number: int
    text: str
    answer: str
    because: str  # the rule, applied to these numbers, in one or two sentences
    evidence: list[str] = field(default_factory=list)  # markdown lines


def finite_score(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def _spread(xs: list[float]) -> str:
    return f"{_signed(_mean(xs))} ± {_std(xs):.2f}" if len(xs) > 1 else f"{_signed(_mean(xs))} (one)"


def _table(lines: list[str]) -> list[str]:
    """A markdown table, or nothing while it has no rows under its header."""
    return lines if len(lines) > 2 else []


def _tier(cfg, name: str):
    return next((t for t in cfg.tiers if t.name == name), None)


def _full_rows(cfg, rows: list[dict]) -> list[dict]:
    """Full-set cells with a score (a missing or non-finite BLEU counts as unfinished)."""
    return [r for r in rows if r["size"] == cfg.full_size and r["draw"] == 0 and finite_score(r.get("bleu"))]


def _by_seed(rows: list[dict], strategy: str, lang: str) -> dict[int, dict]:
    return {r["seed"]: r for r in rows if r["strategy"] == strategy and r["lang"] == lang}


def _significant(tests: list[dict], lang: str, direction: int) -> bool:
    """System significantly above (direction 1) / below (-1) the baseline on
    BLEU on every seed tested for `lang`."""
    ts = [t for t in tests if t["lang"] == lang]
    return bool(ts) and all(
        t["bleu"]["p_value"] < 0.05 and (t["bleu"]["system"] - t["bleu"]["baseline"]) * direction > 0 for t in ts
    )


def tier_pairs(cfg, rows: list[dict], tier: str, system: str, baseline: str) -> list[tuple[dict, dict]]:
    """(system row, baseline row) of a tier's full-set cells, by target and seed."""
    cells = _full_rows(cfg, tier_rows(cfg, rows).get(tier, []))
    by = {(r["strategy"], r["lang"], r["seed"]): r for r in cells}
    return [(r, by[(baseline, lang, seed)]) for (s, lang, seed), r in sorted(by.items())
            if s == system and (baseline, lang, seed) in by]


def _pairwise(cfg, rows: list[dict], tests: list[dict], system: str, baseline: str, langs: list[str], seeds_needed: int):
    """Per target: both strategies' mean BLEU over the seeds both finished, and
    whether the system is significantly above / below on every seed tested.
    A target with fewer seeds than planned is shown, and listed as missing."""
    table, missing = [], []
    cells = _full_rows(cfg, rows)
    for lang in langs:
        s, b = _by_seed(cells, system, lang), _by_seed(cells, baseline, lang)
        seeds = sorted(set(s) & set(b))
        if len(seeds) < seeds_needed:
            missing.append(lang)
        if not seeds:
            continue
        table.append({"lang": lang, "seeds": len(seeds), "complete": len(seeds) >= seeds_needed,
                      "system": _mean([s[k]["bleu"] for k in seeds]), "baseline": _mean([b[k]["bleu"] for k in seeds]),
                      "above": _significant(tests, lang, 1), "below": _significant(tests, lang, -1)})
    return table, missing


def _pairwise_lines(table: list[dict], system: str, baseline: str) -> list[str]:
    lines = [f"| target | seeds | {baseline} BLEU | {system} BLEU | difference | paired bootstrap (every seed) |",
             "|---|---:|---:|---:|---:|---|"]
    for t in table:
        sig = "significantly above" if t["above"] else "significantly below" if t["below"] else "not significant"
        lines.append(f"| {t['lang']} | {t['seeds']} | {t['baseline']:.2f} | {t['system']:.2f} | {_signed(t['system'] - t['baseline'])} | {sig} |")
    return _table(lines)


# --- 1. above on every target ----------------------------------------------------------


def claim_above_everywhere(cfg, rows: list[dict], tests: list[dict]) -> Claim:
    text = f"{cfg.system} above {cfg.baseline} on every target at {cfg.full_size} sentences."
    tier = _tier(cfg, HEADLINE)
    if tier is None:
        return Claim(1, text, UNSURE, f"the recipe has no {HEADLINE} tier.")
    head = tier_rows(cfg, rows).get(HEADLINE, [])
    table, missing = _pairwise(cfg, head, tests, cfg.system, cfg.baseline, tier.targets or cfg.targets, len(tier.seeds))
    lines = _pairwise_lines(table, cfg.system, cfg.baseline)
    below = [t["lang"] for t in table if t["complete"] and t["below"]]
    if below:
        return Claim(1, text, FAILS, f"significantly below on every seed on {', '.join(below)} (paired bootstrap, p < 0.05, BLEU).", lines)
    if missing:
        return Claim(1, text, UNSURE, f"{HEADLINE} cells unfinished for {', '.join(missing)}.", lines)
    if all(t["above"] for t in table):
        return Claim(1, text, HOLDS, "significantly above on every target and every seed (paired bootstrap, p < 0.05, BLEU).", lines)
    weak = [t["lang"] for t in table if not t["above"]]
    return Claim(1, text, UNSURE, f"not significantly above on every seed on {', '.join(weak)}.", lines)


# --- 2. the gap widens as the adapt set shrinks -----------------------------------------


def _slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = _mean(xs), _mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    a = my - b * mx
    resid = sum((y - a - b * x) ** 2 for x, y in points)
    return b, math.sqrt(resid / (len(points) - 2) / sxx)


def claim_gap_widens(cfg, rows: list[dict], tests: list[dict]) -> Claim:
    text = f"The gap between {cfg.system} and {cfg.baseline} widens as the adapt set shrinks."
    tiers = [t for t in cfg.tiers if len(t.sizes) > 1 and not t.pretrain_tokens]
    names = {t.name for t in tiers}
    langs = [x for x in cfg.targets if any(x in (t.targets or cfg.targets) for t in tiers)]
    if not langs:
        return Claim(2, text, UNSURE, "the recipe has no learning-curve tier.")
    by_tier = tier_rows(cfg, rows)
    curve_rows = [r for r in {r["id"]: r for t in tiers for r in by_tier.get(t.name, [])}.values() if finite_score(r.get("bleu"))]
    # Paired gaps: the two strategies adapted on the same draw of sentences with the same seed.
    # The trend is fitted over subsets of the adapt set (0 < size <= full): zero-shot is not a
    # size on that scale, and sets above it add other data (adapt-extra): both shown, not fitted.
    lines = ["| target | sentences | paired gaps | gap (BLEU), mean ± std |", "|---|---:|---:|---:|"]
    verdicts, fitted = {}, []
    for lang in langs:
        cells = defaultdict(dict)
        for r in curve_rows:
            if r["lang"] == lang and r["strategy"] in (cfg.system, cfg.baseline):
                cells[(r["size"], r["draw"], r["seed"])][r["strategy"]] = r["bleu"]
        gaps, paired = defaultdict(list), set()
        for key, pair in sorted(cells.items()):
            if len(pair) == 2:
                gaps[key[0]].append(pair[cfg.system] - pair[cfg.baseline])
                paired.add(key)
        for size in sorted(gaps):
            note = " (zero-shot)" if size == 0 else " (+ adapt-extra, not fitted)" if size > cfg.full_size else ""
            lines.append(f"| {lang} | {size}{note} | {len(gaps[size])} | {_spread(gaps[size])} |")
        fit = lambda size: 0 < size <= cfg.full_size  # noqa: E731
        planned = {(c.size, c.draw, c.seed) for c, t in expand(cfg)
                   if t in names and c.lang == lang and c.strategy == cfg.system and fit(c.size)}
        points = [(math.log2(cfg.full_size / size), g) for size in gaps if fit(size) for g in gaps[size]]
        if not planned <= paired or len({p[0] for p in points}) < 3 or len(points) < 4:
            verdicts[lang] = None
            continue
        b, se = _slope(points)
        fitted.append(f"{lang}: {_signed(b)} ± {2 * se:.2f}")
        verdicts[lang] = "widens" if b - 2 * se > 0 else "does not widen" if b + 2 * se <= 0 else "unclear"
    evidence = _table(lines)
    if evidence:
        evidence = evidence + ["", "Fitted change of the gap per halving of the adapt set (least squares over the paired gaps "
                               f"of the sizes 1 to {cfg.full_size}, ± 2 standard errors), BLEU: "
                               + ("; ".join(fitted) if fitted else "not every size finished yet") + "."]
    bad = [k for k, v in verdicts.items() if v == "does not widen"]
    if bad:
        return Claim(2, text, FAILS, f"on {', '.join(bad)} the fitted gap does not grow as the set halves, even at +2 standard errors.", evidence)
    missing = [k for k, v in verdicts.items() if v is None]
    if missing:
        return Claim(2, text, UNSURE, f"learning-curve cells unfinished for {', '.join(missing)}.", evidence)
    if all(v == "widens" for v in verdicts.values()):
        return Claim(2, text, HOLDS, "on every curve target the fitted gap grows as the set halves, beyond 2 standard errors.", evidence)
    return Claim(2, text, UNSURE, "the fitted slope is within 2 standard errors of zero on "
                 + ", ".join(k for k, v in verdicts.items() if v == "unclear") + ".", evidence)


# --- 3. embeddings + encoder is the best option ----------------------------------------


def _option_tiers(cfg):
    return [t for t in cfg.tiers if len(t.tunes) > 1 and not t.pretrain_tokens and EMB_ENC in t.tunes]


def _option_rows(cfg, rows: list[dict], strategy: str) -> dict[tuple[str, str], dict]:
    """(tune, target) -> the strategy's option cell (full set, the tier's first seed)."""
    by_tier = tier_rows(cfg, rows)
    return {(r["tune"], r["lang"]): r for t in _option_tiers(cfg) if strategy in t.strategies
            for r in _full_rows(cfg, by_tier.get(t.name, [])) if r["strategy"] == strategy and r["seed"] == min(t.seeds)}


def _option_test_means(cfg, rows: list[dict], strategy: str) -> dict[str, dict[str, float]]:
    """tune -> {target: test BLEU} of a strategy's option cells."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (tune, lang), r in _option_rows(cfg, rows, strategy).items():
        out[tune][lang] = r["bleu"]
    return out


def _rival(valid: dict[str, float]) -> str | None:
    """The strongest option besides emb_enc: the best mean validation score (as the
    headline picks options: on validation, so the test set only tests)."""
    others = [t for t in valid if t != EMB_ENC]
    return max(others, key=valid.get) if EMB_ENC in valid and others else None


def option_pairs(cfg, rows: list[dict]) -> list[tuple[dict, dict]]:
    """(emb_enc row, strongest other option's row) per strategy and target,
    once every option cell of the strategy has finished (`_rival`)."""
    pairs = []
    for s in dict.fromkeys(x for t in _option_tiers(cfg) for x in t.strategies if x != "scratch"):
        rival = _rival(option_scores(cfg, rows, s))
        cells = _option_rows(cfg, rows, s)
        if rival is not None:
            pairs += [(cells[(EMB_ENC, lang)], cells[(rival, lang)]) for tune, lang in sorted(cells)
                      if tune == EMB_ENC and (rival, lang) in cells]
    return pairs


def claim_emb_enc_best(cfg, rows: list[dict], option_tests: list[dict]) -> Claim:
    text = "Embeddings + encoder (`emb_enc`) is the best adaptation option."
    tiers = _option_tiers(cfg)
    strategies = list(dict.fromkeys(s for t in tiers for s in t.strategies if s != "scratch"))
    if not strategies:
        return Claim(3, text, UNSURE, f"the recipe has no options tier with `{EMB_ENC}`.")
    lines = [f"| strategy | option | mean validation {cfg.adapt.select_metric} | mean test BLEU | targets |", "|---|---|---:|---:|---:|"]
    per, rivals = {}, {}
    for s in strategies:
        valid, bleu = option_scores(cfg, rows, s), _option_test_means(cfg, rows, s)
        for tune in sorted(bleu):
            v = valid.get(tune)
            lines.append(f"| {s} | {tune} | {'–' if v is None else f'{v:.2f}'} | {_mean(list(bleu[tune].values())):.2f} | {len(bleu[tune])} |")
        tests = [t for t in option_tests if t["system"].startswith(f"{s}.")]
        langs = sorted(bleu.get(EMB_ENC, {}))
        if not valid or not tests or {t["lang"] for t in tests} != set(langs):
            per[s] = None
            continue
        rivals[s] = _rival(valid)
        above = all(_significant(tests, x, 1) for x in langs)
        below = all(_significant(tests, x, -1) for x in langs)
        per[s] = HOLDS if above else FAILS if below else UNSURE
    lines = _table(lines)
    if lines:
        lines += ["", "Paired bootstrap of `emb_enc` against the strongest other option (best mean validation score) on each target: "
                  + "; ".join(f"{s} against `{r}`: " + ", ".join(
                      f"{t['lang']} {_signed(t['bleu']['system'] - t['bleu']['baseline'])} (p {t['bleu']['p_value']:.3f})"
                      for t in option_tests if t["system"].startswith(f"{s}.")) for s, r in rivals.items()) + "."]
    failed = [s for s, v in per.items() if v == FAILS]
    if failed:
        return Claim(3, text, FAILS, "another option is significantly above `emb_enc` on every target for " + ", ".join(
            f"{s} (`{rivals[s]}`)" for s in failed) + ".", lines)
    unfinished = [s for s, v in per.items() if v is None]
    if unfinished:
        return Claim(3, text, UNSURE, f"option cells unfinished for {', '.join(unfinished)}.", lines)
    if all(v == HOLDS for v in per.values()):
        return Claim(3, text, HOLDS, "`emb_enc` is significantly above the strongest other option on every target, for every strategy with option runs (paired bootstrap, p < 0.05, BLEU).", lines)
    return Claim(3, text, UNSURE, "`emb_enc` is not significantly above the strongest other option on every target for "
                 + ", ".join(s for s, v in per.items() if v == UNSURE) + ".", lines)


# --- 4. Korean gains least ----------------------------------------------------------------


def claim_korean_least(cfg, rows: list[dict], tests: list[dict]) -> Claim:
    text = f"Korean gains least ({cfg.system} − {cfg.baseline}, BLEU, at {cfg.full_size} sentences)."
    tier = _tier(cfg, HEADLINE)
    langs = (tier.targets or cfg.targets) if tier else []
    if DISTANT not in langs:
        return Claim(4, text, UNSURE, f"Korean is not a target of the recipe's {HEADLINE} tier.")
    if len(tier.seeds) < 2:
        return Claim(4, text, UNSURE, "one adaptation seed: no spread over seeds to judge the gains by.")
    head = _full_rows(cfg, tier_rows(cfg, rows).get(HEADLINE, []))
    gains = {}
    lines = [f"| target | seeds | gain over {cfg.baseline}, mean ± std | gain over scratch |", "|---|---:|---:|---:|"]
    for lang in langs:
        s, b, z = (_by_seed(head, x, lang) for x in (cfg.system, cfg.baseline, "scratch"))
        seeds = sorted(set(s) & set(b))
        if not seeds:
            continue
        g = [s[k]["bleu"] - b[k]["bleu"] for k in seeds]
        if len(seeds) >= len(tier.seeds):  # a target's gain counts once all its seeds are in
            gains[lang] = (_mean(g), _std(g))
        zs = sorted(set(s) & set(z))
        over_scratch = _signed(_mean([s[k]["bleu"] - z[k]["bleu"] for k in zs])) if zs else "–"
        lines.append(f"| {lang} | {len(seeds)} | {_spread(g)} | {over_scratch} |")
    lines = _table(lines)
    if DISTANT not in gains:
        return Claim(4, text, UNSURE, "Korean's headline cells are unfinished.", lines)
    ko_m, ko_s = gains[DISTANT]
    others = {k: v for k, v in gains.items() if k != DISTANT}
    clearly_less = [k for k, (m, sd) in others.items() if m + sd < ko_m - ko_s]
    if clearly_less:
        return Claim(4, text, FAILS, f"{', '.join(clearly_less)} gain(s) less than Korean, ± 1 std over seeds apart.", lines)
    if len(others) < len(langs) - 1:
        return Claim(4, text, UNSURE, "not every target's headline cells are finished.", lines)
    if all(m - sd > ko_m + ko_s for m, sd in others.values()):
        return Claim(4, text, HOLDS, "Korean's gain ± 1 std over seeds lies below every other target's.", lines)
    return Claim(4, text, UNSURE, "Korean's gain is within 1 std over seeds of "
                 + ", ".join(k for k, (m, sd) in others.items() if m - sd <= ko_m + ko_s) + ".", lines)


# --- 5. ULR helps -----------------------------------------------------------------------


def ulr_twin(cfg) -> str | None:
    """The pretrain entry that is the system's own recipe with per-language
    embedding tables instead of ULR (budget aside)."""
    sys_cfg = cfg.pretrain.get(cfg.system)
    if sys_cfg is None or sys_cfg.model.embedding != "ulr":
        return None

    def key(tr):
        tr = dataclasses.replace(tr, model=dataclasses.replace(tr.model, embedding="ulr"), max_train_tokens=0, max_minutes=0.0,
                                 max_steps=0, output="", snapshot_tokens=0)
        return dataclasses.asdict(tr)

    twins = [n for n, tr in cfg.pretrain.items() if n != cfg.system and tr.model.embedding != "ulr" and key(tr) == key(sys_cfg)]
    return twins[0] if len(twins) == 1 else None


def ulr_tier(cfg) -> tuple[str, str] | None:
    """(tier name, twin) where a tier adapts both the system and its no-ULR twin."""
    twin = ulr_twin(cfg)
    for t in cfg.tiers:
        if twin and cfg.system in t.strategies and twin in t.strategies:
            return t.name, twin
    return None


def claim_ulr_helps(cfg, rows: list[dict], ulr_tests: list[dict]) -> Claim:
    text = f"ULR helps ({cfg.system} with ULR against the same pre-training with per-language embedding tables)."
    found = ulr_tier(cfg)
    if found is None:
        return Claim(5, text, UNSURE, f"no tier adapts {cfg.system} beside a twin pre-trained without ULR.")
    name, twin = found
    tier = _tier(cfg, name)
    langs = tier.targets or cfg.targets
    table, missing = _pairwise(cfg, tier_rows(cfg, rows).get(name, []), ulr_tests, cfg.system, twin, langs, len(tier.seeds))
    at = f"tier {name}" + (f", both at {snapshot_label(tier.pretrain_tokens[0])} pre-training tokens" if tier.pretrain_tokens else "")
    lines = _pairwise_lines(table, f"{cfg.system} (ULR)", f"{twin} (tables)")
    if lines:
        lines += ["", f"Mean over the targets ({at}): {_mean([t['baseline'] for t in table]):.2f} → {_mean([t['system'] for t in table]):.2f} BLEU."]
    if missing:
        return Claim(5, text, UNSURE, f"cells unfinished for {', '.join(missing)} ({at}).", lines)
    above = [t["lang"] for t in table if t["above"]]
    below = [t["lang"] for t in table if t["below"]]
    # "Helps" in general, not on every target: a majority of targets significant one way, none the other.
    if len(above) > len(table) / 2 and not below:
        return Claim(5, text, HOLDS, f"with ULR significantly above on {len(above)} of {len(table)} targets and below on none (paired bootstrap, p < 0.05, BLEU; {at}).", lines)
    if len(below) > len(table) / 2 and not above:
        return Claim(5, text, FAILS, f"with ULR significantly below on {len(below)} of {len(table)} targets and above on none (paired bootstrap, p < 0.05, BLEU; {at}).", lines)
    return Claim(5, text, UNSURE, f"significantly above on {len(above)}, below on {len(below)} of {len(table)} targets: no majority one way ({at}).", lines)


# --- all five -----------------------------------------------------------------------------


def answer_claims(cfg, rows: list[dict], tests: list[dict], ulr_tests: list[dict], option_tests: list[dict]) -> list[Claim]:
    return [
        claim_above_everywhere(cfg, rows, tests),
        claim_gap_widens(cfg, rows, tests),
        claim_emb_enc_best(cfg, rows, option_tests),
        claim_korean_least(cfg, rows, tests),
        claim_ulr_helps(cfg, rows, ulr_tests),
    ]


def claims_markdown(claims: list[Claim], test_sets: str = "the full test sets") -> list[str]:
    L = ["## The paper's claims", "",
         "Each answered by a rule fixed before the results, that weighs evidence the same way in both directions: "
         "**holds** or **does not hold** only when paired bootstrap tests (p < 0.05 on every seed), a fitted trend "
         "(± 2 standard errors) or the spread over adaptation seeds (± 1 std) separate the two sides; **cannot tell** "
         f"otherwise, and while a claim's cells are unfinished. BLEU is sacreBLEU on {test_sets}; each strategy is "
         "pre-trained once, so no answer covers pre-training variance.", ""]
    L += ["| claim | answer | because |", "|---|---|---|"]
    L += [f"| {c.number}. {c.text} | **{c.answer}** | {c.because} |" for c in claims]
    L.append("")
    for c in claims:
        if c.evidence:
            L += [f"### Claim {c.number}: {c.answer}", "", *c.evidence, ""]
    return L
