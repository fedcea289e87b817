"""Corpus scores with sacreBLEU: BLEU and chrF with their signatures."""
from __future__ import annotations

import os
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

from data_prep.sources import read_lines
from mtmeta.errors import DataError


def score(hypotheses: list[str], references: list[str]) -> dict:
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not references:
        raise DataError("nothing to score: no references")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(b.score, 2),
        "chrf": round(c.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(b),
        "sentences": len(references),
    }


def tokenized_bleu(hypotheses: list[str], references: list[str]) -> dict:
    """BLEU on Moses-tokenised text (sacremoses, then sacreBLEU with
    tokenize=none): what multi-bleu.perl reports and what the MetaNMT paper
    (and most NMT papers of its time) call BLEU. Not comparable with
    sacreBLEU's own detokenised BLEU; always label it."""
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang="en")
    t = lambda x: tok.tokenize(x, escape=False, return_str=True)  # noqa: E731
    bleu = BLEU(tokenize="none", force=True)  # the input is tokenised on purpose
    b = bleu.corpus_score([t(h) for h in hypotheses], [[t(r) for r in references]])
    return {"tok_bleu": round(b.score, 2), "tok_bleu_signature": f"moses-tokenised+{bleu.get_signature()}"}


def paired_bootstrap(baseline: list[str], system: list[str], references: list[str], samples: int = 1000, seed: int = 12345) -> dict:
    """sacreBLEU's paired bootstrap resampling (Koehn 2004) of `system`
    against `baseline` on BLEU and chrF: two-sided p-values of the absolute
    difference, and the system's bootstrap mean and 95% interval."""
    import os

    from sacrebleu.significance import PairedTest

    if not (len(baseline) == len(system) == len(references)):
        raise DataError("paired bootstrap needs hypotheses and references of the same length")
    old = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)  # sacrebleu reads its resampling seed from here
    try:
        test = PairedTest(
            [("baseline", baseline), ("system", system)],
            {"BLEU": BLEU(), "chrF": CHRF()},
            [references],
            test_type="bs",
            n_samples=samples,
        )
        _, results = test()
    finally:
        if old is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = old
    out = {"samples": samples}
    for key, metric in (("BLEU", "bleu"), ("chrF2", "chrf")):  # sacrebleu names chrF by its beta
        base, sys_ = results[key][0], results[key][1]
        out[metric] = {
            "baseline": round(base.score, 2),
            "system": round(sys_.score, 2),
            "p_value": sys_.p_value,
            "system_mean": None if sys_.mean is None else round(float(sys_.mean), 2),
            "system_ci95": None if sys_.ci is None else round(float(sys_.ci), 2),
        }
    return out


REPEAT_RUN = 4  # issue 11's bar: "one token repeated 4 or more times in a row"


def longest_repeat(line: str) -> int:
    """The longest run of one word repeated back to back in `line`: words are
    whitespace-separated and compared case-insensitively, so "The the the the"
    is a run of 4. Punctuation stays part of a word ("the, the" is not a run)."""
    best = run = 0
    prev = None
    for word in line.lower().split():
        run = run + 1 if word == prev else 1
        prev = word
        best = max(best, run)
    return best


def repetition(hypotheses: list[str], run: int = REPEAT_RUN) -> dict:
    """How many output lines hold one word repeated `run` or more times in a
    row, and their share of all lines (in %)."""
    lines = sum(1 for h in hypotheses if longest_repeat(h) >= run)
    return {"repeat_lines": lines, "repeat_pct": round(100.0 * lines / len(hypotheses), 2) if hypotheses else 0.0, "repeat_run": run}


def score_files(hyp_path: str | Path, ref_path: str | Path) -> dict:
    hyps, refs = read_lines(hyp_path), read_lines(ref_path)
    if len(hyps) != len(refs):
        raise DataError(f"{hyp_path} has {len(hyps)} lines but {ref_path} has {len(refs)}")
    result = score(hyps, refs)
    result.update({"hypotheses": str(hyp_path), "references": str(ref_path)})
    return result


def write_json(result: dict, path: str | Path) -> None:
    """Write JSON atomically and durably: a crash leaves the old file or the
    new one, never half of one (run records are read back to resume); a full
    disk is one line naming the file (mtmeta.safe_io)."""
    from .safe_io import atomic_write_json

    atomic_write_json(path, result, "record")
