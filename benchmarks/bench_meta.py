"""Meta-training throughput vs multitask, same model, same data.

Counts target tokens of forward/backward work per second: a multitask step
is one pass over a batch; a first-order meta-step is k passes over D plus
one over D'. Variants are run round-robin in short chunks so a busy machine
slows them all alike.

    python -m benchmarks.bench_meta --data work/prepared --out results/meta_throughput.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from data_prep.prepare import load_summary, load_ulr_vectors
from mtmeta.config import MODEL_PRESETS, MetaConfig
from mtmeta.data import PairData
from mtmeta.model import build_model
from mtmeta.strategies import MultitaskStrategy
from mtmeta.strategies.meta import MetaStrategy
from mtmeta.tasks import Task, TaskSampler
from data_prep.prepared import load_prepared_vocabs

VARIANTS = {
    "multitask": None,
    "fomaml-sgd": MetaConfig(variant="fomaml", inner_optimizer="sgd"),
    "fomaml-adam": MetaConfig(variant="fomaml", inner_optimizer="adam"),
    "reptile": MetaConfig(variant="reptile", inner_optimizer="sgd"),
    "maml": MetaConfig(variant="maml", inner_optimizer="sgd"),
}


def setup(data: str, embedding: str, variant: str, max_tokens: int, seed: int = 1):
    langs = load_summary(data)["train_langs"]
    en, src_vocabs, joint = load_prepared_vocabs(data, langs)
    cfg = dataclasses.replace(MODEL_PRESETS["cpu"], embedding=embedding)
    torch.manual_seed(seed)
    model = build_model(cfg, len(en), {k: len(src_vocabs[k]) for k in langs}, joint, ulr=load_ulr_vectors(data) if embedding == "ulr" else None)
    tasks = {
        k: Task(k, PairData.load(Path(data) / "data" / f"{k}-en" / "train.npz"), model.src_embed.offset(k), max_tokens, cfg.max_positions, seed)
        for k in langs
    }
    meta = VARIANTS[variant]
    if meta is None:
        strategy = MultitaskStrategy(TaskSampler(tasks, 5.0, seed))
    else:
        strategy = MetaStrategy(TaskSampler(tasks, math.inf, seed), meta, model)
    params = strategy.trainable_parameters(model)
    opt = torch.optim.Adam(params, lr=1e-4)
    engine = SimpleNamespace(model=model, settings=SimpleNamespace(label_smoothing=0.1))
    model.train()
    return {"engine": engine, "strategy": strategy, "opt": opt, "tokens": 0, "seconds": 0.0, "steps": 0}


def run_chunk(state: dict, steps: int, count: bool) -> None:
    for _ in range(steps):
        t0 = time.perf_counter()
        state["opt"].zero_grad(set_to_none=True)
        stats = state["strategy"].train_step(state["engine"])
        state["opt"].step()
        if count:
            state["seconds"] += time.perf_counter() - t0
            state["tokens"] += stats["ntokens"]
            state["steps"] += 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--embedding", default="tables", choices=["tables", "ulr"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--chunk", type=int, default=5, help="steps per variant per round")
    p.add_argument("--max-tokens", type=int, default=4000)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(2)
    states = {v: setup(a.data, a.embedding, v, a.max_tokens) for v in a.variants}
    for v, s in states.items():
        run_chunk(s, 2, count=False)  # warm-up
    for _ in range(a.rounds):
        for v, s in states.items():
            run_chunk(s, a.chunk if v != "maml" else max(1, a.chunk // 2), count=True)
    rows = {
        v: {"steps": s["steps"], "tokens": s["tokens"], "seconds": round(s["seconds"], 2), "tokens_per_s": round(s["tokens"] / s["seconds"], 1)}
        for v, s in states.items()
    }
    base = rows.get("multitask", {}).get("tokens_per_s")
    for v, r in rows.items():
        if base:
            r["relative_to_multitask"] = round(r["tokens_per_s"] / base, 3)
    if "maml" in rows and "fomaml-sgd" in rows:
        rows["maml"]["step_cost_vs_fomaml_sgd"] = round(
            (rows["maml"]["seconds"] / rows["maml"]["steps"]) / (rows["fomaml-sgd"]["seconds"] / rows["fomaml-sgd"]["steps"]), 2
        )
    result = {"data": a.data, "embedding": a.embedding, "model": "cpu preset", "max_tokens": a.max_tokens, "threads": torch.get_num_threads(), "variants": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
