"""Pick the pre-training model size by measurement: multitask training of
several sizes on the same prepared folder, each for the same number of
target tokens, same schedule (in tokens) and seed; report the source
validation NLL along the way, the final BLEU/chrF on the validation pairs,
tokens/s and wall time.

    python -m benchmarks.size_sweep --data work/prepared --tokens 1000000 --out results/size_sweep.json

Every run resumes after a kill (work/size-sweep/<size>/last.pt).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from mtmeta import config as C
from mtmeta.checkpoint import read_checkpoint
from mtmeta.training import train

SIZES = {
    # name: (embed_dim, ffn_dim, encoder_layers, decoder_layers, heads)
    "d256-2+2": (256, 1024, 2, 2, 4),
    "d256-3+3": (256, 1024, 3, 3, 4),  # the `cpu` preset
    "d384-4+4": (384, 1536, 4, 4, 6),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="work/prepared")
    p.add_argument("--work", default="work/size-sweep")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--embedding", default="tables", choices=["tables", "ulr"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    for name in args.sizes:
        d, ffn, enc, dec, heads = SIZES[name]
        model = dataclasses.replace(C.MODEL_PRESETS["cpu"], embed_dim=d, ffn_dim=ffn, encoder_layers=enc, decoder_layers=dec,
                                    heads=heads, embedding=args.embedding)
        cfg = C.TrainConfig(
            data=args.data, output=f"{args.work}/{name}", strategy="multitask", model=model,
            max_train_tokens=args.tokens, lr=7e-4, warmup_tokens=args.tokens // 4, max_tokens=4000,
            validate_every=50, save_every=50, bleu_sentences=0, temperature=5.0, threads=args.threads, seed=1,
        )
        t0 = time.time()
        result = train(cfg, log=lambda m: print(f"[{name}] {m}", flush=True), progress=False)
        state = read_checkpoint(Path(cfg.output) / "last.pt")
        history = state["history"]
        rows.append({
            "size": name, "embed_dim": d, "ffn_dim": ffn, "layers": f"{enc}+{dec}", "heads": heads,
            "steps": result["step"], "tokens": result["tokens"], "train_minutes": round(result["minutes"], 1),
            "wall_minutes_this_call": round((time.time() - t0) / 60, 1),
            "tokens_per_s": round(result["tokens"] / max(1e-9, result["minutes"] * 60)),
            "final_valid_nll": history[-1]["valid_nll"],
            "best_valid_nll": min(h["valid_nll"] for h in history),
            "curve": [{"tokens": h["tokens"], "valid_nll": round(h["valid_nll"], 4)} for h in history],
        })
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}), flush=True)
    from mtmeta.scoring import write_json

    write_json({"command": "python -m benchmarks.size_sweep " + " ".join(
        f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()), "runs": rows}, args.out)


if __name__ == "__main__":
    main()
