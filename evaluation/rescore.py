"""Re-score a comparison's committed hypotheses with plain sacrebleu and check
every row of its results.jsonl against them.

    python -m evaluation.rescore results/compare --pack ../shared/corpus

Each row names its hypothesis file (under the results folder) and its
reference (under the pack). BLEU and chrF are recomputed with sacrebleu's
defaults (the signatures the rows record) and compared at the two decimals
the rows keep. Exit status 1 when any row disagrees, so this can gate a commit.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

from data_prep.sources import read_lines
from mtmeta.compare_plan import load_rows
from mtmeta.errors import DataError


def rescore(results: str | Path, pack: str | Path) -> tuple[int, list[dict], str]:
    """(rows checked, mismatches, sacrebleu signatures); a mismatch names the
    row, metric, recorded and recomputed values."""
    results, pack = Path(results), Path(pack)
    rows = load_rows(results / "results.jsonl")
    if not rows:
        raise DataError(f"{results / 'results.jsonl'}: no rows to re-score")
    refs_cache: dict[str, list[str]] = {}
    mismatches = []
    bleu, chrf = BLEU(), CHRF()
    for row in rows:
        hyps = read_lines(results / row["hypotheses"])
        if row["reference"] not in refs_cache:
            refs_cache[row["reference"]] = read_lines(pack / row["reference"])
        refs = refs_cache[row["reference"]]
        if len(hyps) != row["sentences"] or len(hyps) > len(refs):
            raise DataError(
                f"{row['id']}: {len(hyps)} hypotheses, row says {row['sentences']} sentences, "
                f"reference has {len(refs)} lines"
            )
        refs = refs[: len(hyps)]  # rows made with evaluate.max_sentences score the first n
        got = {
            "bleu": round(bleu.corpus_score(hyps, [refs]).score, 2),
            "chrf": round(chrf.corpus_score(hyps, [refs]).score, 2),
        }
        for metric, value in got.items():
            if value != round(row[metric], 2):
                mismatches.append({"id": row["id"], "metric": metric, "recorded": row[metric], "rescored": value})
    return len(rows), mismatches, f"{bleu.get_signature().format()} ; {chrf.get_signature().format()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a comparison's results folder (holds results.jsonl and hyps/)")
    ap.add_argument("--pack", default="../shared/corpus", help="the corpus pack the rows' references are under")
    args = ap.parse_args(argv)
    try:
        n, mismatches, signatures = rescore(args.results, args.pack)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for m in mismatches:
        print(f"MISMATCH {m['id']} {m['metric']}: recorded {m['recorded']}, sacrebleu {m['rescored']}")
    print(f"{n - len({m['id'] for m in mismatches})}/{n} rows re-score exactly ({signatures})")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
