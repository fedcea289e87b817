"""The scores of a released model, measured, gathered into its model card
(issue 11, "Ship it").

    python -m evaluation.release_report models/multitask-ulr \\
        --adapt work/adapt-ro/results.json --adapt-command "mtmeta recipe run recipes/adapt-ro.yaml" \\
        --per-language results/release/multitask-ulr/per_language.json \\
        --zero-shot results/release/multitask-ulr/zero_shot.json

Reads what the measuring commands wrote: the results.json of an adaptation
recipe run from the release (`mtmeta recipe run recipes/adapt-ro.yaml`, any
number of them), a per-source-language report of the checkpoint the release
was exported from (`python -m evaluation.pretrain_report per-language`) and a
zero-shot report (`python -m benchmarks.ulr_zero_shot`). Checks that each was
made from this release (or its checkpoint), copies the adapted hypotheses
beside the results so that every number re-scores from committed files, and
writes RESULTS/NAME/scores.{md,json}; the same markdown goes into the card's
score slot (`release.fill_card_scores`, which updates the manifest).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path

from mtmeta.errors import ConfigError, DataError
from mtmeta.release import CARD, fill_card_scores, read_manifest
from mtmeta.safe_io import atomic_write_json, atomic_write_text
from mtmeta.scoring import read_lines, repetition, score

RESULTS_DIR = Path("results/release")


def _load(path: str | Path, what: str) -> dict:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} {p}: no such file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {p}: not JSON ({e.msg}, line {e.lineno})") from None


def adapted_rows(results: dict, path: str, release: Path, hyp_dir: Path) -> list[dict]:
    """One row per scored test set of a recipe run, re-scored from its
    hypotheses (which are copied to `hyp_dir`), with its repetition rate."""
    rows = []
    for r in results.get("results", []):
        if Path(r.get("pretrained", "")).resolve() != release.resolve():
            raise DataError(f"{path}: adapted from {r.get('pretrained')!r}, not from {release}")
        hyps, refs = read_lines(r["hypotheses"]), read_lines(r["references"])
        if len(hyps) != r["sentences"]:
            raise DataError(f"{path}: {r['hypotheses']} has {len(hyps)} lines, the results say {r['sentences']}")
        scored = score(hyps, refs[: len(hyps)])  # a run may score the first N lines (evaluate.max_sentences)
        if (round(scored["bleu"], 2), round(scored["chrf"], 2)) != (round(r["bleu"], 2), round(r["chrf"], 2)):
            raise DataError(f"{path}: {r['lang']} {r['test']} re-scores to BLEU {scored['bleu']:.2f} / chrF {scored['chrf']:.2f}, "
                            f"not the recorded {r['bleu']} / {r['chrf']}")
        hyp_dir.mkdir(parents=True, exist_ok=True)
        kept = hyp_dir / f"{r['lang']}-en.{r['test']}.hyp"
        shutil.copyfile(r["hypotheses"], kept)
        rows.append({
            "lang": r["lang"], "test": r["test"], "sentences": r["sentences"], "tune": r["tune"],
            "adapt_steps": r["adapt_steps"], "beam": r["beam"], "bleu": r["bleu"], "chrf": r["chrf"],
            **repetition(hyps), "bleu_signature": r["bleu_signature"], "chrf_signature": r["chrf_signature"],
            "hypotheses": kept.as_posix(), "references": r["references"],
            "minutes": results.get("minutes") if len(results.get("results", [])) == 1 else None,  # a run's total, not per language
            "results": path,
        })
    return rows


def markdown(name: str, scores: dict) -> str:
    L = ([scores["note"], ""] if scores.get("note") else []) + [
        f"Measured on {scores['date']} with the commands below; files in `{scores['folder']}`.", ""]
    adapted = scores.get("adapted") or []
    if adapted:
        L += ["**Adapted** to a new language from its 800-sentence adapt set and its MUSE dictionary's word pairs (the "
              "new language's pieces enter through the ULR, with MUSE-seeded queries), best step on its validation set, "
              "the full test set:", "",
              "| pair | test set | tuned | steps | beam | BLEU | chrF | lines with a word repeated 4+ times | minutes |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in adapted:
            m = "–" if r.get("minutes") is None else f"{r['minutes']:.1f}"
            L.append(f"| {r['lang']}-en | {r['test']} ({r['sentences']:,} lines) | {r['tune']} | {r['adapt_steps']} | {r['beam']} | "
                     f"{r['bleu']:.2f} | {r['chrf']:.2f} | {r['repeat_pct']:.1f}% | {m} |")
        L += ["", f"    {scores['adapt_command']}", ""]
    per = scores.get("per_language")
    if per:
        L += ["**Its own source languages**, translated directly (the 100 held-out validation pairs per language; "
              f"beam {per['beam']}; the whole table: `{per['markdown']}`):", "",
              "| " + " | ".join(["lang"] + [x["lang"] for x in per["rows"]]) + " |",
              "|---|" + "---:|" * len(per["rows"]),
              "| BLEU | " + " | ".join(f"{x['bleu']:.1f}" for x in per["rows"]) + " |",
              "| chrF | " + " | ".join(f"{x['chrf']:.1f}" for x in per["rows"]) + " |", ""]
        for label, g in per["pooled"].items():
            L.append(f"- {label}: BLEU {g['bleu']:.2f} / chrF {g['chrf']:.2f} ({g['sentences']:,} pairs)")
        L += ["", "Many held-out English references are also training targets (of another source language: multi-way "
              "parallel sets), so the pooled score partly measures memory; the pairs whose reference was never trained "
              "on are the honest figure.", "", f"    {per['command']}", ""]
    zero = scores.get("zero_shot")
    if zero:
        L += ["**Zero-shot** (no fine-tuning: only the new language's vocabulary and its ULR queries), the full test sets, "
              "beside the control with random queries:", "",
              "| pair | test set | queries | BLEU | chrF | test NLL | repeats |", "|---|---|---|---:|---:|---:|---:|"]
        for r in zero["rows"]:
            L.append(f"| {r['lang']}-en | {r['test']} | {r['variant']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['test_nll']:.3f} | {r['repeat_pct']:.1f}% |")
        L += ["", f"    {zero['command']}", ""]
    sigs = sorted({s for r in adapted for s in (r["bleu_signature"], r["chrf_signature"])})
    if sigs:
        L += ["sacreBLEU: " + "; ".join(f"`{s}`" for s in sigs)]
    return "\n".join(L).strip() + "\n"


def build(release: str, adapt: list[str], adapt_command: str, per_language: str | None, zero_shot: str | None,
          results_dir: Path = RESULTS_DIR, note: str = "") -> dict:
    rel = Path(release)
    manifest = read_manifest(rel)  # a release folder, or one clear line
    name = rel.name
    folder = results_dir / name
    provenance = _load(rel / "model.json", "release config").get("provenance", {})
    scores: dict = {"release": rel.as_posix(), "folder": folder.as_posix(), "provenance": provenance,
                    "mtmeta_version": manifest.get("mtmeta_version"), "date": datetime.date.today().isoformat(), "note": note}
    if adapt:
        if not adapt_command:
            raise ConfigError("--adapt needs --adapt-command: the command that made those results")
        scores["adapted"] = [row for p in adapt for row in adapted_rows(_load(p, "adaptation results"), p, rel, folder / "hyps")]
        scores["adapt_command"] = adapt_command
    if per_language:
        per = _load(per_language, "per-language report")
        made_from = (provenance.get("checkpoint") or {}).get("sha256")
        if made_from and per["checkpoint"].get("sha256") != made_from:
            raise DataError(f"{per_language}: measured on {per['checkpoint'].get('path')}, not on the checkpoint "
                            f"{release} was exported from ({provenance['checkpoint'].get('path')})")
        beam = max(int(k[4:]) for k in per["decoding"])
        rows = per["decoding"][f"beam{beam}"]["scores"]
        scores["per_language"] = {
            "beam": beam, "command": per["command"], "checkpoint": per["checkpoint"],
            "markdown": str(Path(per_language).with_suffix(".md").as_posix()),
            "rows": [{"lang": lang, **{k: rows[lang][k] for k in ("bleu", "chrf", "repeat_pct")}} for lang in per["languages"]],
            "pooled": {},
        }
        groups = per["decoding"][f"beam{beam}"].get("groups", {})
        for label, key, where in (("all pairs pooled", "all", rows), ("reference never a training target", "reference trained: no", groups),
                                  ("WMT news, reference never trained on", "from WMT news, reference trained: no", groups)):
            if key in where:
                g = where[key]
                scores["per_language"]["pooled"][label] = {"bleu": g["bleu"], "chrf": g["chrf"], "sentences": g["sentences"]}
    if zero_shot:
        zero = _load(zero_shot, "zero-shot report")
        if Path(zero["checkpoint"]).resolve() != rel.resolve():
            raise DataError(f"{zero_shot}: measured on {zero['checkpoint']}, not on {release}")
        scores["zero_shot"] = {"command": zero["command"], "rows": zero["rows"]}
    folder.mkdir(parents=True, exist_ok=True)
    md = markdown(name, scores)
    atomic_write_json(folder / "scores.json", scores, what="release scores")
    atomic_write_text(folder / "scores.md", f"# Scores of the release {name}\n\n" + md, what="release scores")
    fill_card_scores(rel, md)
    return {"scores": (folder / "scores.md").as_posix(), "card": (rel / CARD).as_posix()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.release_report", description=__doc__.split("\n\n")[0])
    p.add_argument("release", help="a release folder (mtmeta export --format release), e.g. models/multitask-ulr")
    p.add_argument("--adapt", nargs="+", default=[], metavar="RESULTS_JSON", help="results.json of adaptation recipe runs from the release")
    p.add_argument("--adapt-command", default="", help="the command that made them")
    p.add_argument("--per-language", help="per_language_RUN.json of the checkpoint the release was exported from")
    p.add_argument("--zero-shot", help="benchmarks/ulr_zero_shot.py's JSON, measured on the release")
    p.add_argument("--note", default="", help="a paragraph above the scores (e.g. that the run goes on)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    try:
        out = build(args.release, args.adapt, args.adapt_command, args.per_language, args.zero_shot, Path(args.results_dir), args.note)
    except (ConfigError, DataError) as e:
        print(f"release_report: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
