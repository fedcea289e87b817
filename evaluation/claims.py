"""The MetaNMT paper's five claims, each answered from the comparison's rows:
holds / does not hold / cannot tell, with the numbers that decide it and the
rule that turned them into the answer.

The rules are fixed here, before the final rows exist, so that the answer is
not chosen after seeing them. One shape for all five: a claim **holds** only
when the evidence is significant (paired bootstrap) or clear of the seed /
draw spread; it **does not hold** when the measured means already contradict
it (there the claim's direction is not even seen on average); otherwise,
including while cells are missing, the answer is **cannot tell**.

Claims are stated for `cfg.system` (MetaNMT) against `cfg.baseline`
(multitask); claim 5 compares the system with its twin pre-trained without
ULR (`ulr_twin`), in a tier holding both.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from mtmeta.compare_plan import expand, option_scores, snapshot_label, tier_rows

HOLDS, FAILS, UNSURE = "holds", "does not hold", "cannot tell"
EMB_ENC = "emb_enc"  # the paper's best option: source embeddings + encoder
DISTANT = "ko"  # claim 4's language


@dataclass
class Claim:
    number: int
    text: str
    answer: str
    because: str  # the rule, applied to these numbers, in one or two sentences
    evidence: list[str] = field(default_factory=list)  # markdown lines


def _mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _table(lines: list[str]) -> list[str]:
    """A markdown table, or nothing while it has no rows under its header."""
    return lines if len(lines) > 2 else []


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def _by_seed(rows: list[dict], strategy: str, lang: str) -> dict[int, dict]:
    return {r["seed"]: r for r in rows if r["strategy"] == strategy and r["lang"] == lang and r["draw"] == 0}


def _significant(tests: list[dict], lang: str, direction: int) -> bool:
    """Significantly above (direction 1) / below (-1) on BLEU on every seed tested."""
    ts = [t for t in tests if t["lang"] == lang]
    return bool(ts) and all(
        t["bleu"]["p_value"] < 0.05 and (t["bleu"]["system"] - t["bleu"]["baseline"]) * direction > 0 for t in ts
    )


def _tier(cfg, name: str):
    return next((t for t in cfg.tiers if t.name == name), None)


def _pairwise(cfg, rows: list[dict], tests: list[dict], system: str, baseline: str, langs: list[str], seeds_needed: int):
    """Per target: both strategies' mean BLEU over the seeds both finished, and
    whether the system is significantly above on every seed tested. A target
    with fewer seeds than planned is shown, and listed as missing."""
    table, missing = [], []
    for lang in langs:
        s, b = _by_seed(rows, system, lang), _by_seed(rows, baseline, lang)
        seeds = sorted(set(s) & set(b))
        if len(seeds) < seeds_needed:
            missing.append(lang)
        if not seeds:
            continue
        sm, bm = _mean([s[k]["bleu"] for k in seeds]), _mean([b[k]["bleu"] for k in seeds])
        table.append({"lang": lang, "seeds": len(seeds), "system": sm, "baseline": bm, "complete": len(seeds) >= seeds_needed,
                      "above": _significant(tests, lang, 1), "below": _significant(tests, lang, -1)})
    return table, missing


def _pairwise_lines(table: list[dict], system: str, baseline: str) -> list[str]:
    lines = [f"| target | seeds | {baseline} BLEU | {system} BLEU | difference | paired bootstrap (every seed) |",
             "|---|---:|---:|---:|---:|---|"]
    for t in table:
        sig = "significantly above" if t["above"] else "significantly below" if t["below"] else "not significant"
        lines.append(f"| {t['lang']} | {t['seeds']} | {t['baseline']:.2f} | {t['system']:.2f} | {_signed(t['system'] - t['baseline'])} | {sig} |")
    return lines


def claim_above_everywhere(cfg, rows: list[dict], tests: list[dict]) -> Claim:
    text = f"{cfg.system} above {cfg.baseline} on every target at {cfg.full_size} sentences."
    head = tier_rows(cfg, rows).get("headline", [])
    tier = _tier(cfg, "headline")
    table, missing = _pairwise(cfg, head, tests, cfg.system, cfg.baseline, cfg.targets, len(tier.seeds) if tier else 1)
    not_above = [t["lang"] for t in table if t["complete"] and t["system"] <= t["baseline"]]
    if not_above:
        answer, because = FAILS, f"{cfg.system}'s mean BLEU is not above {cfg.baseline}'s on {', '.join(not_above)}."
    elif missing:
        answer, because = UNSURE, f"headline cells missing for {', '.join(missing)}."
    elif all(t["above"] for t in table):
        answer, because = HOLDS, "significantly above (paired bootstrap, p < 0.05, BLEU) on every target and every seed."
    else:
        weak = [t["lang"] for t in table if not t["above"]]
        answer, because = UNSURE, f"above in the mean everywhere, but not significantly on every seed on {', '.join(weak)}."
    return Claim(1, text, answer, because, _pairwise_lines(table, cfg.system, cfg.baseline) if table else [])


def _slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = _mean(xs), _mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    a = my - b * mx
    resid = sum((y - a - b * x) ** 2 for x, y in points)
    se = math.sqrt(resid / (len(points) - 2) / sxx) if len(points) > 2 else float("inf")
    return b, se


def claim_gap_widens(cfg, rows: list[dict], tests: list[dict]) -> Claim:
    text = f"The gap between {cfg.system} and {cfg.baseline} widens as the adapt set shrinks."
    tiers = [t for t in cfg.tiers if len(t.sizes) > 1 and not t.pretrain_tokens]
    by_tier = tier_rows(cfg, rows)
    curve_rows = list({r["id"]: r for t in tiers for r in by_tier.get(t.name, [])}.values())
    names = {t.name for t in tiers}
    langs = [x for x in cfg.targets if any(x in (t.targets or cfg.targets) for t in tiers)]
    if not langs:
        return Claim(2, text, UNSURE, "the recipe has no learning-curve tier.")
    # Paired gaps: the two strategies adapted on the same draw of sentences with the same seed.
    lines = ["| target | size | paired gaps | gap, mean ± std (BLEU) |", "|---|---:|---:|---:|"]
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
        planned = {(c.size, c.draw, c.seed) for c, t in expand(cfg) if t in names and c.lang == lang and c.strategy == cfg.system}
        for size in sorted(gaps):
            lines.append(f"| {lang} | {size}{' (zero-shot)' if size == 0 else ''} | {len(gaps[size])} | {_mean(gaps[size]):.2f} ± {_std(gaps[size]):.2f} |")
        # The trend: gap against halvings of the adapt set below the full set (zero-shot is
        # not a size on that scale; it is shown, not fitted).
        points = [(math.log2(cfg.full_size / size), g) for size in gaps if size > 0 for g in gaps[size]]
        if not planned <= paired or len({p[0] for p in points}) < 3 or len(points) < 4:
            verdicts[lang] = None
            continue
        b, se = _slope(points)
        fitted.append(f"{lang}: {_signed(b)} ± {2 * se:.2f} BLEU per halving")
        verdicts[lang] = "widens" if b - 2 * se > 0 else "not" if b <= 0 else "unclear"
    evidence = _table(lines) and lines + ["", "Slope of the gap against halvings of the adapt set (least squares over the paired gaps of the "
                        "non-zero sizes, ± 2 standard errors): " + ("; ".join(fitted) if fitted else "not enough sizes yet") + "."]
    if any(v == "not" for v in verdicts.values()):
        bad = [k for k, v in verdicts.items() if v == "not"]
        return Claim(2, text, FAILS, f"the gap does not grow as the set shrinks on {', '.join(bad)} (slope ≤ 0).", evidence)
    if any(v is None for v in verdicts.values()):
        missing = [k for k, v in verdicts.items() if v is None]
        return Claim(2, text, UNSURE, f"learning-curve cells unfinished for {', '.join(missing)}.", evidence)
    if all(v == "widens" for v in verdicts.values()):
        return Claim(2, text, HOLDS, "the gap grows with every halving of the set, beyond 2 standard errors, on every curve target.", evidence)
    return Claim(2, text, UNSURE, "the gap grows in the mean, but not beyond 2 standard errors everywhere.", evidence)


def claim_emb_enc_best(cfg, rows: list[dict], tests: list[dict]) -> Claim:
    text = "Embeddings + encoder (`emb_enc`) is the best adaptation option."
    tiers = [t for t in cfg.tiers if len(t.tunes) > 1 and not t.pretrain_tokens]
    strategies = list(dict.fromkeys(s for t in tiers for s in t.strategies if s != "scratch"))
    if not strategies or not any(EMB_ENC in t.tunes for t in tiers):
        return Claim(3, text, UNSURE, f"the recipe has no options tier with `{EMB_ENC}`.")
    lines = ["| strategy | option | mean validation " + cfg.adapt.select_metric + " | mean test BLEU | targets |", "|---|---|---:|---:|---:|"]
    per = {}
    for s in strategies:
        valid = option_scores(cfg, rows, s)  # empty until every option cell has finished
        seed = min(x for t in tiers if s in t.strategies for x in t.seeds)
        test = defaultdict(list)
        for r in rows:
            if r["strategy"] == s and r["size"] == cfg.full_size and r["draw"] == 0 and r["seed"] == seed and not r.get("pretrain_tokens"):
                test[r["tune"]].append(r["bleu"])
        for tune in sorted(test):
            v = valid.get(tune)
            lines.append(f"| {s} | {tune} | {'–' if v is None else f'{v:.2f}'} | {_mean(test[tune]):.2f} | {len(test[tune])} |")
        if not valid:
            per[s] = None
            continue
        best_valid = max(valid, key=valid.get)
        best_test = max(test, key=lambda t: _mean(test[t]))
        per[s] = (best_valid == EMB_ENC) + (best_test == EMB_ENC)  # 0, 1 or 2 of the two measures
    names = lambda n: ", ".join(s for s, v in per.items() if v == n)  # noqa: E731
    lines = _table(lines)
    if any(v == 0 for v in per.values()):
        return Claim(3, text, FAILS, f"another option is best on both validation and mean test BLEU for {names(0)}.", lines)
    if any(v is None for v in per.values()):
        return Claim(3, text, UNSURE, f"option cells unfinished for {names(None)}.", lines)
    if all(v == 2 for v in per.values()):
        return Claim(3, text, HOLDS, f"`{EMB_ENC}` is best on validation and on mean test BLEU for every strategy with option runs.", lines)
    return Claim(3, text, UNSURE, f"validation and test disagree on the best option for {names(1)}.", lines)


def claim_korean_least(cfg, rows: list[dict], tests: list[dict]) -> Claim:
    text = f"Korean gains least ({cfg.system} − {cfg.baseline}, BLEU, at {cfg.full_size} sentences)."
    if DISTANT not in cfg.targets:
        return Claim(4, text, UNSURE, "Korean is not a target of this recipe.")
    head = tier_rows(cfg, rows).get("headline", [])
    gains, lines = {}, ["| target | seeds | gain over " + cfg.baseline + ", mean ± std | gain over scratch |", "|---|---:|---:|---:|"]
    tier = _tier(cfg, "headline")
    need = len(tier.seeds) if tier else 1
    for lang in cfg.targets:
        s, b, z = (_by_seed(head, x, lang) for x in (cfg.system, cfg.baseline, "scratch"))
        seeds = sorted(set(s) & set(b))
        if not seeds:
            continue
        g = [s[k]["bleu"] - b[k]["bleu"] for k in seeds]
        if len(seeds) >= need:  # a target's gain counts once all its seeds are in
            gains[lang] = (_mean(g), _std(g))
        zs = sorted(set(s) & set(z))
        over_scratch = _signed(_mean([s[k]["bleu"] - z[k]["bleu"] for k in zs])) if zs else "–"
        lines.append(f"| {lang} | {len(seeds)} | {_signed(_mean(g))} ± {_std(g):.2f} | {over_scratch} |")
    lines = _table(lines)
    if DISTANT not in gains:
        return Claim(4, text, UNSURE, "Korean's headline cells are not finished.", lines)
    ko, others = gains[DISTANT], {k: v for k, v in gains.items() if k != DISTANT}
    if any(v[0] <= ko[0] for v in others.values()):
        lower = [k for k, v in others.items() if v[0] <= ko[0]]
        return Claim(4, text, FAILS, f"{', '.join(lower)} gain(s) no more than Korean.", lines)
    if len(others) < len(cfg.targets) - 1:
        return Claim(4, text, UNSURE, "not every target's headline cells are finished.", lines)
    if all(v[0] - v[1] > ko[0] + ko[1] for v in others.values()):
        return Claim(4, text, HOLDS, "Korean's gain is the smallest, and its ± 1 std interval over seeds lies below every other target's.", lines)
    return Claim(4, text, UNSURE, "Korean's gain is the smallest in the mean, within one seed std of another target's.", lines)


def ulr_twin(cfg) -> str | None:
    """The pretrain entry that is the system's own recipe with per-language
    embedding tables instead of ULR (budget and validation cadence aside)."""
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
    tier, twin = found
    trows = tier_rows(cfg, rows).get(tier, [])
    langs = [x for t in cfg.tiers if t.name == tier for x in (t.targets or cfg.targets)]
    tier_cfg = _tier(cfg, tier)
    table, missing = _pairwise(cfg, trows, ulr_tests, cfg.system, twin, langs, len(tier_cfg.seeds))
    at = f" (tier {tier}" + (f": both at {snapshot_label(tier_cfg.pretrain_tokens[0])} pre-training tokens)" if tier_cfg.pretrain_tokens else ")")
    lines = _pairwise_lines(table, f"{cfg.system} (ULR)", f"{twin} (tables)") if table else []
    if table:
        lines.append("")
        lines.append(f"Mean over the targets{at}: {_mean([t['baseline'] for t in table]):.2f} → {_mean([t['system'] for t in table]):.2f} BLEU.")
    if table and not missing and _mean([t["system"] for t in table]) <= _mean([t["baseline"] for t in table]):
        return Claim(5, text, FAILS, f"the mean BLEU over the targets is not higher with ULR{at}.", lines)
    if missing:
        return Claim(5, text, UNSURE, f"cells missing for {', '.join(missing)}{at}.", lines)
    if all(t["above"] for t in table):
        return Claim(5, text, HOLDS, f"with ULR significantly above on every target (paired bootstrap, p < 0.05, BLEU){at}.", lines)
    return Claim(5, text, UNSURE, f"higher on average over the targets, but not significantly on every target{at}.", lines)


def answer_claims(cfg, rows: list[dict], tests: list[dict], ulr_tests: list[dict]) -> list[Claim]:
    return [
        claim_above_everywhere(cfg, rows, tests),
        claim_gap_widens(cfg, rows, tests),
        claim_emb_enc_best(cfg, rows, tests),
        claim_korean_least(cfg, rows, tests),
        claim_ulr_helps(cfg, rows, ulr_tests),
    ]


def claims_markdown(claims: list[Claim], test_sets: str = "the full test sets") -> list[str]:
    L = ["## The paper's claims", "",
         "Each answered by a rule fixed before the results: **holds** only when the evidence is significant "
         "(paired bootstrap) or clear of the spread over seeds and draws; **does not hold** when the measured means "
         f"already contradict it; **cannot tell** otherwise, including while cells are missing. BLEU is sacreBLEU on {test_sets}.", ""]
    L += ["| claim | answer | because |", "|---|---|---|"]
    L += [f"| {c.number}. {c.text} | **{c.answer}** | {c.because} |" for c in claims]
    L.append("")
    for c in claims:
        if c.evidence:
            L += [f"### Claim {c.number}: {c.answer}", "", *c.evidence, ""]
    return L
