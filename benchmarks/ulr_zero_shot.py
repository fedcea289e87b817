"""Zero-shot with ULR: a new language gets only its vocabulary and query
vectors aligned to English (no fine-tuning), compared with the same model
given random query vectors for that language.

    python -m benchmarks.ulr_zero_shot --checkpoint work/ulr/train-multitask/best.pt \
        --data work/prepared-ulr --langs ro ko --out results/ulr_zero_shot.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtmeta.adaptation import adapt
from mtmeta.config import AdaptConfig
from mtmeta.score_testset import evaluate_checkpoint


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--langs", nargs="+", default=["ro", "ko"])
    p.add_argument("--work", default="work/ulr/zero-shot")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    rows = []
    for lang in a.langs:
        for queries in ("aligned", "random"):
            out = Path(a.work) / f"{lang}-{queries}"
            cfg = AdaptConfig(
                checkpoint=a.checkpoint, lang=lang, data=a.data, output=str(out), zero_shot=True, random_queries=queries == "random"
            )
            added = adapt(cfg, progress=False)["added"]
            result = evaluate_checkpoint(str(out / "best.pt"), lang, a.data, out / "eval", beam=a.beam, progress=False)
            row = {"lang": lang, "queries": queries, **{k: result[k] for k in ("test", "bleu", "chrf", "sentences", "bleu_signature", "chrf_signature", "hypotheses")}}
            if "alignment" in added:
                row["alignment"] = added["alignment"]
            print(json.dumps({k: row[k] for k in ("lang", "queries", "bleu", "chrf")}), flush=True)
            rows.append(row)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"checkpoint": a.checkpoint, "beam": a.beam, "results": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
