"""`mtmeta recipe run FILE`: one experiment from one YAML file.

prepare -> train -> adapt to each target -> translate and score its test set;
or, with `pretrained` (a released model) and `data` (the corpus pack):
adapt it to each target -> translate and score (recipes/adapt-ro.yaml).
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
    if cfg.pretrained:
        return run_pretrained(cfg, log, progress)
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


def run_pretrained(cfg: RecipeConfig, log=print, progress: bool = True) -> list[dict]:
    """A recipe with `pretrained`: adapt that model (a release folder or a
    checkpoint) to each target from `data` (a corpus pack read by its
    MANIFEST roles, or a prepared folder), score the test set, show a few
    lines. Nothing is prepared or pre-trained. Each target's `timing` says
    where the time went: loading, new vocabulary and ULR alignment (setup),
    adaptation steps, validations and saves, decoding, scoring."""
    from data_prep.prepare import read_protected

    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    stages, stage = 2 * len(cfg.targets), 0

    def banner(text: str) -> None:
        nonlocal stage
        stage += 1
        log(f"\n== [{stage}/{stages}] {text} ({(time.time() - t0) / 60:.1f} min elapsed)")

    rows = []
    for lang in cfg.targets:
        ad = dataclasses.replace(cfg.adapt, lang=lang, data=cfg.data, checkpoint=cfg.pretrained, output=str(work / f"adapt-{lang}"))
        banner(f"adapt {cfg.pretrained} to {lang} ({ad.tune}, at most {ad.max_steps} steps)")
        adapted = adapt(ad, log=log, progress=progress)
        banner(f"evaluate {lang}")
        ev = cfg.evaluate
        t_eval, cpu_eval = time.time(), time.process_time()
        result = evaluate_checkpoint(
            adapted["best"], lang, cfg.data, work / "eval", test=ev.test or None, beam=ev.beam,
            batch_sentences=ev.batch_sentences, max_sentences=ev.max_sentences, progress=progress,
        )
        at = adapted.get("timing", {})
        steps = adapted["minutes"] * 60  # the engine's training time: the steps alone
        timing = {
            "adapt_setup_seconds": at.get("setup_seconds"),
            "adapt_steps_seconds": round(steps, 1),
            "adapt_validation_seconds": at.get("validation_seconds"),
            "adapt_validations": at.get("validations"),
            "adapt_other_seconds": round(at.get("seconds", 0) - steps - at.get("setup_seconds", 0) - at.get("validation_seconds", 0), 1),
            "decode_seconds": result["translate_seconds"],
            "evaluate_other_seconds": round(time.time() - t_eval - result["translate_seconds"], 1),
            "adapt_cpu_seconds": at.get("cpu_seconds"),
            "adapt_setup_cpu_seconds": at.get("setup_cpu_seconds"),
            "adapt_validation_cpu_seconds": at.get("validation_cpu_seconds"),
            "evaluate_cpu_seconds": round(time.process_time() - cpu_eval, 1),
        }
        result.update({
            "strategy": f"release {Path(cfg.pretrained).name}", "tune": ad.tune, "adapt_steps": adapted["step"],
            "pretrained": cfg.pretrained, "timing": timing,
        })
        log(f"{lang}-en {result['test']}: BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}")
        if cfg.show:
            text = read_protected(cfg.data, lang, "test", result["test"])
            hyps = Path(result["hypotheses"]).read_text(encoding="utf-8").split("\n")
            for i in range(min(cfg.show, len(text.src))):
                log(f"\n  source:    {text.src[i]}\n  output:    {hyps[i]}\n  reference: {text.tgt[i]}")
        rows.append(result)
    minutes = round((time.time() - t0) / 60, 2)
    write_json({"recipe": cfg.name, "minutes": minutes, "results": rows}, work / "results.json")
    log("\n" + results_table(rows))
    log(f"\nfinished in {minutes:.1f} min; results in {work / 'results.json'}")
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


__all__ = ["run_pretrained", "run_recipe", "results_table"]
