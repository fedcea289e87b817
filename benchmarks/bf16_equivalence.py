"""Does bf16 autocast train as well as fp32? The same model, data, schedule
and number of updates in both precisions, for several seeds; the source
validation NLL along the way. bf16 is "the same" when its gap to fp32 is
within the spread between seeds of one precision.

    python -m benchmarks.bf16_equivalence --data work/prepared --steps 300 --seeds 1 2 --out results/speed/bf16_equivalence.json

Runs resume after a kill (work/bf16-equivalence/<precision>-s<seed>/last.pt).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

from mtmeta import config as C
from mtmeta.checkpoint import read_checkpoint
from mtmeta.training import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="work/prepared")
    p.add_argument("--work", default="work/bf16-equivalence")
    p.add_argument("--langs", nargs="+", default=["cs", "de", "fr", "ru"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    runs = []
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):  # interleaved: a busier moment hits both
            cfg = C.TrainConfig(
                data=args.data, output=f"{args.work}/{precision}-s{seed}", strategy="multitask",
                model=dataclasses.replace(C.MODEL_PRESETS["cpu"]), langs=args.langs, max_steps=args.steps,
                lr=7e-4, warmup_steps=max(1, args.steps // 4), max_tokens=4000, validate_every=max(1, args.steps // 6),
                save_every=50, bleu_sentences=0, seed=seed, device="cpu", precision=precision, threads=args.threads,
            )
            result = train(cfg, log=lambda m: print(f"[{precision} s{seed}] {m}", flush=True), progress=False)
            history = read_checkpoint(Path(cfg.output) / "last.pt")["history"]
            runs.append({"precision": precision, "seed": seed, "steps": result["step"], "tokens": result["tokens"],
                         "minutes": round(result["minutes"], 2),
                         "curve": [{"step": h["step"], "valid_nll": round(h["valid_nll"], 4)} for h in history]})
    final = {(r["precision"], r["seed"]): r["curve"][-1]["valid_nll"] for r in runs}
    summary = {}
    for precision in ("fp32", "bf16"):
        values = [final[(precision, s)] for s in args.seeds]
        summary[precision] = {"final_valid_nll": values, "mean": round(statistics.mean(values), 4),
                              "seed_spread": round(max(values) - min(values), 4)}
    gaps = [final[("bf16", s)] - final[("fp32", s)] for s in args.seeds]
    summary["bf16_minus_fp32_by_seed"] = [round(g, 4) for g in gaps]
    summary["within_seed_noise"] = max(abs(g) for g in gaps) <= max(summary["fp32"]["seed_spread"], summary["bf16"]["seed_spread"])
    from mtmeta.scoring import write_json

    write_json({"command": "python -m benchmarks.bf16_equivalence " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()),
        "summary": summary, "runs": runs}, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
