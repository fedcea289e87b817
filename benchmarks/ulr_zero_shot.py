"""Zero-shot translation through ULR alone (issue 11 §4, issue 13 item 5):
a pre-trained model meets a new language with no fine-tuning at all; only
its vocabulary (trained on the 800 adapt sentences' source side) and its ULR
queries are added. The query variants:

- `muse`: today's alignment (the pack's MUSE dictionary seeds Procrustes, its
  pairs join the co-occurrence projection 3 times): the `mtmeta adapt` default;
- `induced`: the alignment before the MUSE dictionaries (`--dictionary none
  --dictionary-projection 0`: seeds induced from co-occurrence in the adapt set);
- `random`: random unit vectors, the control (`--random-queries`);
- anything else given as NAME='FLAGS' (e.g. an adapt option under test).

For each language and variant: `mtmeta adapt --zero-shot`, then the per-token
NLL of the references on the whole test set and on adapt-valid (teacher
forced: a signal even where BLEU is near zero), then `mtmeta evaluate` on the
full test set (beam 5, sacreBLEU with signatures) and the share of output
lines with one word repeated 4+ times in a row.

    python -m benchmarks.ulr_zero_shot --checkpoint models/multitask-ulr --langs ro ko \\
        --out results/ulr_zero_shot.json --workdir work/zeroshot --threads 1
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_VARIANTS = {
    "muse": "",
    "induced": "--dictionary none --dictionary-projection 0",
    "random": "--random-queries",
}


def _run(cmd: list[str], log: Path) -> str:
    """Run a command, its messages (stderr) appended to `log`; returns its stdout."""
    with open(log, "a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    if proc.returncode:
        sys.exit(f"ulr_zero_shot: {shlex.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return proc.stdout


def teacher_forced_nll(checkpoint: Path, data: str, lang: str, role: str, max_tokens: int) -> dict:
    """Per-token NLL of the references of the pack's `role` set (no decoding)."""
    from data_prep.prepare import read_pack_protected
    from mtmeta.adaptation import score_language
    from mtmeta.checkpoint import load_bundle
    from mtmeta.data import PairData

    bundle, _ = load_bundle(checkpoint)
    text = read_pack_protected(data, lang, role)
    pairs = PairData.from_lists(bundle.src_vocab(lang).encode_batch(text.src), bundle.tgt_vocab.encode_batch(text.tgt))
    m = score_language(bundle, lang, pairs, 0, max_tokens)
    return {"nll": round(m["valid_nll"], 4), "sentences": len(text.src)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="pre-trained model (release folder or .pt) with ULR")
    p.add_argument("--data", default="../shared/corpus", help="the pack (adapt, adapt-valid and test roles are read)")
    p.add_argument("--config", default="recipes/compare.yaml", help="adapt settings (vocabulary size, vectors)")
    p.add_argument("--langs", nargs="+", default=["ro", "ko"])
    p.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS),
                   help="names from %s, or NAME='ADAPT FLAGS'" % sorted(DEFAULT_VARIANTS))
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default="work/zeroshot")
    p.add_argument("--out", required=True, help="JSON file to write (a .md table beside it)")
    a = p.parse_args(argv)

    from mtmeta.scoring import repetition

    variants = {}
    for v in a.variants:
        name, _, flags = v.partition("=")
        if not flags and name not in DEFAULT_VARIANTS:
            p.error(f"unknown variant {name!r}: use one of {sorted(DEFAULT_VARIANTS)} or NAME='FLAGS'")
        variants[name] = flags if flags else DEFAULT_VARIANTS[name]
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for lang in a.langs:
        for name, flags in variants.items():
            out = work / f"{lang}-{name}"
            log = work / f"{lang}-{name}.log"
            log.unlink(missing_ok=True)
            t0 = time.time()
            stdout = _run(["mtmeta", "adapt", "--config", a.config, "--checkpoint", a.checkpoint, "--data", a.data,
                  "--lang", lang, "--zero-shot", "--output", str(out), "--threads", str(a.threads), *shlex.split(flags)], log)
            added = json.loads(stdout)["added"]
            nll = {role: teacher_forced_nll(out / "best.pt", a.data, lang, role, 2000) for role in ("adapt-valid", "test")}
            _run(["mtmeta", "evaluate", "--checkpoint", str(out / "best.pt"), "--data", a.data, "--lang", lang,
                  "--beam", str(a.beam), "--output-dir", str(out / "eval"), "--threads", str(a.threads)], log)
            (scores,) = [json.loads(f.read_text()) for f in sorted((out / "eval").glob("*.json"))]
            hyps = Path(scores["hypotheses"]).read_text().splitlines()
            kept = Path(a.out).with_suffix("") / f"{lang}-{name}.hyp"  # committed beside the table: re-scorable
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(scores["hypotheses"], kept)
            rows.append({
                "lang": lang, "variant": name, "adapt_flags": flags, "test": scores["test"],
                "sentences": scores["sentences"], "bleu": scores["bleu"], "chrf": scores["chrf"],
                "test_nll": nll["test"]["nll"], "adapt_valid_nll": nll["adapt-valid"]["nll"],
                **repetition(hyps), "precision_at_1": added.get("alignment", {}).get("precision_at_1"),
                "bleu_signature": scores["bleu_signature"], "chrf_signature": scores["chrf_signature"],
                "hypotheses": str(kept), "minutes": round((time.time() - t0) / 60, 2),
            })
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "command": "python -m benchmarks.ulr_zero_shot " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "checkpoint": a.checkpoint, "beam": a.beam, "rows": rows,
    }
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"Zero-shot (no fine-tuning) from `{a.checkpoint}`, beam {a.beam}, full test sets.", "",
             f"    {result['command']}", "",
             "| lang | queries | test set | BLEU | chrF | lines with a 4+ repeat | test NLL | adapt-valid NLL |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['lang']} | {r['variant']} | {r['test']} ({r['sentences']}) | {r['bleu']:.2f} | {r['chrf']:.2f} | "
                     f"{r['repeat_pct']:.1f}% | {r['test_nll']:.3f} | {r['adapt_valid_nll']:.3f} |")
    if rows:
        lines += ["", f"BLEU: `{rows[0]['bleu_signature']}`; chrF: `{rows[0]['chrf_signature']}`"]
    Path(a.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
