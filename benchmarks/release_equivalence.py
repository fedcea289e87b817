"""Does a release (bf16 weights, `mtmeta export --format release`) translate
like the fp32 checkpoint it was made from?

Greedy decoding (fp32 compute, ULR folded as `mtmeta translate` does) of the
first N held-out validation pairs of each language in the prepared folder
the model was trained on, with the checkpoint and with each release; for
each: BLEU/chrF against the references, BLEU against the checkpoint's own
output, the share of output lines identical to the checkpoint's, and the
validation NLL on those pairs (teacher-forced).

    python -m benchmarks.release_equivalence --checkpoint work/diag/multitask-u3000.pt \\
        --release work/ship/release-u3000 --data work/prepared-ulr --langs de cs --sentences 100 \\
        --out results/release/equivalence.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from pathlib import Path

import torch

from mtmeta.checkpoint import load_bundle
from mtmeta.data import PairData
from mtmeta.decoding import translate_ids
from mtmeta.release import read_manifest
from mtmeta.scoring import score
from mtmeta.validation import Validator


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_model(path: str, sets: dict[str, PairData], n: int) -> dict:
    t0 = time.time()
    bundle, _ = load_bundle(path)
    load_s = time.time() - t0
    bundle.model.eval()
    with torch.no_grad():
        nll = Validator(dict(sets), 0).evaluate(bundle)["valid_nll"]
    bundle.model.fold_embeddings()
    out, refs = {}, {}
    t0 = time.time()
    with torch.no_grad():
        for lang, data in sets.items():
            out[lang] = translate_ids(bundle, lang, [d.tolist() for d in data.src[:n]], beam=1, progress=False)
            refs[lang] = [bundle.tgt_vocab.decode(t.tolist()) for t in data.tgt[:n]]
    return {"hyps": out, "refs": refs, "valid_nll": nll, "load_seconds": round(load_s, 2), "decode_seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--release", nargs="+", required=True, help="release folder(s) made from --checkpoint")
    ap.add_argument("--data", required=True, help="the prepared folder the model was trained on (data/<xx>-en/valid.npz)")
    ap.add_argument("--langs", nargs="+", default=["de", "cs"])
    ap.add_argument("--sentences", type=int, default=100, help="first N validation pairs per language")
    ap.add_argument("--out", default="results/release/equivalence.json")
    a = ap.parse_args()
    torch.set_num_threads(1)

    sets = {}
    for lang in a.langs:
        data = PairData.load(Path(a.data) / "data" / f"{lang}-en" / "valid.npz")
        idx = list(range(min(a.sentences, len(data))))
        sets[lang] = PairData.from_lists([data.src[i].tolist() for i in idx], [data.tgt[i].tolist() for i in idx])
    ref = run_model(a.checkpoint, sets, a.sentences)
    rows = {"checkpoint": {"path": a.checkpoint, "bytes": Path(a.checkpoint).stat().st_size, "valid_nll": ref["valid_nll"],
                           "load_seconds": ref["load_seconds"], "decode_seconds": ref["decode_seconds"], "langs": {}}}
    for lang in a.langs:
        s = score(ref["hyps"][lang], ref["refs"][lang])
        rows["checkpoint"]["langs"][lang] = {"bleu": s["bleu"], "chrf": s["chrf"]}
    for rel in a.release:
        r = run_model(rel, sets, a.sentences)
        files = read_manifest(rel)["files"]
        cfg = json.loads((Path(rel) / "model.json").read_text())
        row = {"path": rel, "dtype": cfg["dtype"], "bytes": sum(f["bytes"] for f in files.values()),
               "valid_nll": r["valid_nll"], "valid_nll_change": r["valid_nll"] - ref["valid_nll"],
               "load_seconds": r["load_seconds"], "decode_seconds": r["decode_seconds"], "langs": {}}
        same_all = total = 0
        for lang in a.langs:
            h, c = r["hyps"][lang], ref["hyps"][lang]
            s = score(h, r["refs"][lang])
            same = sum(x == y for x, y in zip(h, c))
            same_all += same
            total += len(h)
            row["langs"][lang] = {
                "bleu": s["bleu"], "chrf": s["chrf"],
                "bleu_change": round(s["bleu"] - rows["checkpoint"]["langs"][lang]["bleu"], 2),
                "bleu_vs_checkpoint_output": score(h, c)["bleu"],
                "identical_lines": same, "lines": len(h), "identical_share": round(same / len(h), 3),
                "differing_examples": [{"checkpoint": y, "release": x} for x, y in zip(h, c) if x != y][:3],
            }
        row["identical_share"] = round(same_all / total, 3)
        rows[rel] = row
        print(f"{rel} ({row['dtype']}, {row['bytes'] / 1e6:.1f} MB): identical {same_all}/{total}; NLL change {row['valid_nll_change']:+.5f}; "
              + "; ".join(f"{lang} BLEU {v['bleu']:.2f} (checkpoint {rows['checkpoint']['langs'][lang]['bleu']:.2f}), vs checkpoint output {v['bleu_vs_checkpoint_output']:.2f}"
                          for lang, v in row["langs"].items()))
    result = {
        "what": "greedy outputs (fp32 compute, ULR folded) of a release against the checkpoint it was made from",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "command": "python -m benchmarks.release_equivalence " + " ".join(
            [f"--checkpoint {a.checkpoint}", "--release " + " ".join(a.release), f"--data {a.data}", "--langs " + " ".join(a.langs),
             f"--sentences {a.sentences}", f"--out {a.out}"]),
        "sentences_per_lang": a.sentences,
        "threads": 1,
        "results": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
