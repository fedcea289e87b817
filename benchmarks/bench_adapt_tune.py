"""Adaptation step speed by what is tuned (all / emb_enc / emb), with our
decoder's output layer against fairseq's own.

With the tied output weight frozen (emb, emb_enc), fairseq's output layer
hands torch.matmul a transposed [B, T, C] view, and matmul then runs a
batched matmul over one expanded copy of the [V, C] weight per sentence
(mtmeta/model/transformer.py, EnglishDecoder). Each setup runs the same real
batches (one known source language's training pairs at the adapt batch
size; the speed does not depend on which language) through forward,
backward and an Adam step in bf16 autocast where supported. Setups alternate
in chunks over several rounds in one process, so a busier moment hits all
alike; the result is target tokens/s per setup (median over rounds) and each
setup's ratio to fairseq's output layer with the same tuning.

    python -m benchmarks.bench_adapt_tune --checkpoint models/multitask-ulr \\
        --data work/prepared-ulr --threads 1 --out results/speed/adapt_tune_speed.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import types
from pathlib import Path

import torch
from fairseq.models.transformer import TransformerDecoderBase

from mtmeta import hardware
from mtmeta.checkpoint import load_bundle
from mtmeta.data import PairData, collate, make_batches
from mtmeta.engine import sequence_loss
from mtmeta.strategies import select_parameters

TUNES = ("all", "emb_enc", "emb")
LAYERS = ("mtmeta", "fairseq")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="prepared folder holding --lang's training pairs")
    p.add_argument("--lang", default="de")
    p.add_argument("--max-tokens", type=int, default=2000, help="batch size in tokens (recipes' adapt default)")
    p.add_argument("--steps", type=int, default=5, help="steps per setup per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    bundle, _ = load_bundle(args.checkpoint)
    model = bundle.model
    model.train()
    data = PairData.load(Path(args.data) / "data" / f"{args.lang}-en" / "train.npz")
    batches = [collate(data, idx, bundle.src_offset(args.lang)) for idx in make_batches(data, args.max_tokens, model.cfg.max_positions)[: args.steps]]
    bf16 = hardware.bf16_supported(torch.device("cpu"))
    ours = model.decoder.output_layer

    def run(tune: str, layer: str) -> float:
        model.decoder.output_layer = ours if layer == "mtmeta" else types.MethodType(TransformerDecoderBase.output_layer, model.decoder)
        params = select_parameters(model, tune)
        opt = torch.optim.Adam(params, lr=1e-5)
        tokens, t0 = 0, time.perf_counter()
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = sequence_loss(model, batch, 0.1)
            (loss / batch["ntokens"]).backward()
            opt.step()
            tokens += batch["ntokens"]
        return tokens / (time.perf_counter() - t0)

    setups = [(t, layer) for t in TUNES for layer in LAYERS]
    for s in setups:  # warm-up: allocator, autocast caches, first-call overheads
        run(*s)
    speeds: dict[tuple[str, str], list[float]] = {s: [] for s in setups}
    for r in range(args.rounds):
        for s in setups if r % 2 == 0 else reversed(setups):
            speeds[s].append(run(*s))
    rows = {}
    for tune in TUNES:
        med = {layer: statistics.median(speeds[(tune, layer)]) for layer in LAYERS}
        rows[tune] = {
            "tokens_per_s": {layer: round(v) for layer, v in med.items()},
            "speedup_over_fairseq_output_layer": round(med["mtmeta"] / med["fairseq"], 2),
        }
        print(f"{tune:8s} mtmeta {med['mtmeta']:7.0f} tok/s  fairseq {med['fairseq']:7.0f} tok/s  x{rows[tune]['speedup_over_fairseq_output_layer']}")
    result = {
        "command": "python -m benchmarks.bench_adapt_tune " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "checkpoint": args.checkpoint,
        "lang": args.lang,
        "batches": len(batches),
        "rounds": args.rounds,
        "results": rows,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
