"""`mtmeta recipe run FILE`: one experiment from one YAML file.

prepare -> train -> adapt to each target -> translate and score its test set.
Every stage skips or resumes what is already done, so re-running after a
kill picks up where it stopped.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from data_prep.prepare import prepare
from .scoring import write_json
from .adaptation import adapt
from .config import RecipeConfig
from .score_testset import evaluate_checkpoint
from .training import train


def run_recipe(cfg: RecipeConfig, log=print, progress: bool = True) -> list[dict]:
    cfg.validate()
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    stages = 1 + 1 + 2 * len(cfg.targets)
    stage = 0

    def banner(text: str) -> None:
        nonlocal stage
        stage += 1
        log(f"\n== [{stage}/{stages}] {text} ({(time.time() - t0) / 60:.1f} min elapsed)")

    prep = dataclasses.replace(cfg.prepare, output=cfg.prepare.output or str(work / "prepared"))
    banner("prepare")
    summary = prepare(prep, log=log)
    cont = summary["contamination"]
    log(
        f"contamination: {cont['meta_train_en_lines_in_adapt_valid_test']} meta-train English lines occur in "
        f"adapt/valid/test sets ({cont['meta_train_en_lines_in_any_protected_set']} counting adapt-extra); "
        f"removed {cont['pairs_removed_english']} + {cont['pairs_removed_source']} pairs"
    )

    tr = dataclasses.replace(cfg.train, data=prep.output, output=str(work / f"train-{cfg.train.strategy}"))
    banner(f"train ({tr.strategy})")
    trained = train(tr, log=log, progress=progress)

    rows = []
    for lang in cfg.targets:
        ad = dataclasses.replace(cfg.adapt, lang=lang, data=prep.output, checkpoint=trained["best"], output=str(work / f"adapt-{lang}"))
        banner(f"adapt to {lang} ({ad.tune})")
        adapted = adapt(ad, log=log, progress=progress)
        banner(f"evaluate {lang}")
        ev = cfg.evaluate
        result = evaluate_checkpoint(
            adapted["best"], lang, prep.output, work / "eval", test=ev.test or None, beam=ev.beam,
            batch_sentences=ev.batch_sentences, max_sentences=ev.max_sentences, progress=progress,
        )
        result.update({"strategy": tr.strategy, "tune": ad.tune, "adapt_steps": adapted["step"], "pretrain_steps": trained["step"]})
        log(f"{lang}-en {result['test']}: BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}")
        rows.append(result)
    write_json({"recipe": cfg.name, "minutes": round((time.time() - t0) / 60, 1), "results": rows}, work / "results.json")
    log("\n" + results_table(rows))
    log(f"\nfinished in {(time.time() - t0) / 60:.1f} min; results in {work / 'results.json'}")
    return rows


def results_table(rows: list[dict]) -> str:
    lines = ["| pair | test set | strategy | tune | BLEU | chrF | sentences |", "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['lang']}-en | {r['test']} | {r['strategy']} | {r['tune']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['sentences']} |"
        )
    if rows:
        lines.append(f"\n{rows[0]['bleu_signature']}\n{rows[0]['chrf_signature']}")
    return "\n".join(lines)


__all__ = ["run_recipe", "results_table"]
