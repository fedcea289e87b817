"""ULR speed: training tokens/s with ULR vs plain tables (same model size,
same batches), and translation speed with ULR folded into tables vs live.

    python -m benchmarks.bench_ulr --data work/prepared-ulr --checkpoint work/ulr/train/best.pt \
        --lang ro --out results/ulr_speed.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from data_prep.prepare import load_summary, load_ulr_vectors, read_protected
from mtmeta.checkpoint import load_bundle
from mtmeta.config import MODEL_PRESETS
from mtmeta.data import PairData
from mtmeta.decoding import translate
from mtmeta.engine import sequence_loss
from mtmeta.model import build_model
from mtmeta.tasks import Task, TaskSampler
from data_prep.prepared import load_prepared_vocabs


def training_speed(data: str, embedding: str, steps: int, warmup: int, seed: int = 1) -> dict:
    summary = load_summary(data)
    langs = summary["train_langs"]
    en, src_vocabs, joint = load_prepared_vocabs(data, langs)
    cfg = dataclasses.replace(MODEL_PRESETS["cpu"], embedding=embedding)
    torch.manual_seed(seed)
    model = build_model(cfg, len(en), {k: len(src_vocabs[k]) for k in langs}, joint, ulr=load_ulr_vectors(data) if embedding == "ulr" else None)
    emb = model.src_embed
    tasks = {
        k: Task(k, PairData.load(Path(data) / "data" / f"{k}-en" / "train.npz"), emb.offset(k), 4000, cfg.max_positions, seed)
        for k in langs
    }
    sampler = TaskSampler(tasks, 5.0, seed)  # same seed: both runs see the same batches
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    tokens, t0 = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            tokens, t0 = 0, time.perf_counter()
        batch = sampler.sample().next_batch()
        opt.zero_grad(set_to_none=True)
        loss, _ = sequence_loss(model, batch, 0.1)
        (loss / batch["ntokens"]).backward()
        opt.step()
        tokens += batch["ntokens"] + int((batch["net_input"]["src_tokens"] != 1).sum())
    seconds = time.perf_counter() - t0
    return {"embedding": embedding, "steps": steps, "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


def translation_speed(checkpoint: str, data: str, lang: str, sentences: int, beam: int) -> dict:
    text = read_protected(data, lang, "test")
    src = text.src[:sentences]
    out = {}
    for mode in ("live", "folded"):
        bundle, _ = load_bundle(checkpoint)
        if mode == "folded":
            bundle.model.fold_embeddings()
        t0 = time.perf_counter()
        hyps = translate(bundle, lang, src, beam=beam, batch_sentences=64)
        seconds = time.perf_counter() - t0
        out[mode] = {"sentences": len(src), "seconds": round(seconds, 2), "sentences_per_s": round(len(src) / seconds, 2)}
        out[mode + "_first_hypothesis"] = hyps[0]
    out["identical_output"] = out.pop("live_first_hypothesis") == out.pop("folded_first_hypothesis")
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="prepared folder with ULR vectors")
    p.add_argument("--checkpoint", required=True, help="a ULR model that knows --lang (e.g. zero-shot adapted)")
    p.add_argument("--lang", default="ro")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sentences", type=int, default=300)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(2)
    result = {
        "machine": f"{torch.get_num_threads()} torch threads, CPU",
        "training": [training_speed(a.data, e, a.steps, a.warmup) for e in ("tables", "ulr")],
    }
    t, u = result["training"]
    result["training_ulr_relative_speed"] = round(u["tokens_per_s"] / t["tokens_per_s"], 3)
    result["translation"] = translation_speed(a.checkpoint, a.data, a.lang, a.sentences, a.beam)
    tr = result["translation"]
    result["translation_folded_speedup"] = round(tr["live"]["seconds"] / tr["folded"]["seconds"], 3)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
