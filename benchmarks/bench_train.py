"""Training speed, fp32 against bf16 autocast, measured on the engine's own
step (Engine.train_one_step) with real batches of a prepared folder.

For each setup (model size x source embedding x strategy) the two
precisions run in alternating chunks of steps, several rounds, in one
process, so a slower or busier moment of the machine hits both alike; the
result is target tokens/s per precision and their ratio (median over
rounds). The same run measures the machine's plain bf16 and fp32 matmul
peak, and the achieved model FLOP/s as a fraction of it.

    python -m benchmarks.bench_train --data work/prepared --threads 2 --out results/speed/train_speed.json

ULR setups use random query/key vectors of the prepared vocabularies' sizes
(the speed does not depend on their values), so a plain prepared folder is
enough.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time

import numpy as np
import torch

from mtmeta import config as C
from mtmeta import hardware
from mtmeta.checkpoint import Bundle
from mtmeta.data import PairData
from mtmeta.engine import Engine
from mtmeta.model import build_model
from mtmeta.strategies import MultitaskStrategy
from mtmeta.strategies.meta import MetaStrategy
from mtmeta.tasks import Task, TaskSampler
from data_prep.prepared import load_prepared_vocabs

LANGS = ["cs", "de", "fr", "ru"]  # four real tasks of different sizes and scripts

SETUPS = {
    "cpu-tables-multitask": ("cpu", "tables", "multitask"),
    "cpu-ulr-multitask": ("cpu", "ulr", "multitask"),
    "cpu-ulr-fomaml": ("cpu", "ulr", "metanmt"),
    "d512-6+6-tables-multitask": ("paper", "tables", "multitask"),
}


def matmul_peak(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n matmul in `dtype` on the current threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def build(data: str, preset: str, embedding: str, strategy: str, max_tokens: int, seed: int = 1):
    en, src, joint = load_prepared_vocabs(data, LANGS)
    model_cfg = dataclasses.replace(C.MODEL_PRESETS[preset], embedding=embedding)
    ulr = None
    if embedding == "ulr":
        g = np.random.default_rng(seed)
        ulr = {
            "en_vectors": g.standard_normal((len(en), 100)).astype(np.float32),
            "key_ids": np.arange(4, 2004),
            "queries": {lang: g.standard_normal((len(src[lang]), 100)).astype(np.float32) for lang in LANGS},
        }
    torch.manual_seed(seed)
    model = build_model(model_cfg, len(en), {lang: len(src[lang]) for lang in LANGS}, ulr=ulr)
    bundle = Bundle(model, en, src)
    tasks = {
        lang: Task(lang, PairData.load(f"{data}/data/{lang}-en/train.npz"), bundle.src_offset(lang), max_tokens, model_cfg.max_positions, seed)
        for lang in LANGS
    }
    if strategy == "metanmt":
        strat = MetaStrategy(TaskSampler(tasks, float("inf"), seed), C.MetaConfig(variant="fomaml"), model)
    else:
        strat = MultitaskStrategy(TaskSampler(tasks, 5.0, seed))
    return bundle, strat


def model_flops_per_step(model, src_tokens: int, tgt_tokens: int) -> float:
    """6 x matmul parameters x tokens (forward + backward), encoder on source
    tokens, decoder and output projection on target tokens; attention scores
    left out (small at these lengths)."""
    groups = model.parameter_groups()
    enc = sum(p.numel() for p in groups["encoder"] if p.dim() == 2)
    dec = sum(p.numel() for n, p in model.decoder.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    out = model.cfg.embed_dim * model.tgt_vocab_size
    return 6.0 * (enc * src_tokens + (dec + out) * tgt_tokens)


def run_setup(name: str, args, hw_fp32: hardware.Hardware, hw_bf16: hardware.Hardware) -> dict:
    preset, embedding, strategy = SETUPS[name]
    bundle, strat = build(args.data, preset, embedding, strategy, args.max_tokens)
    settings = C.TrainConfig(lr=5e-4, warmup_steps=100, max_steps=10**9, validate_every=0, save_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(bundle, strat, settings, tmp, log=lambda *_: None, progress=False, hardware=hw_fp32)
        per = {"fp32": [], "bf16": []}
        flops = {"fp32": 0.0, "bf16": 0.0}
        seconds = {"fp32": 0.0, "bf16": 0.0}
        for _ in range(args.warmup_steps):  # allocator and caches warm in both precisions
            for hw in (hw_fp32, hw_bf16):
                engine.hardware = hw
                engine.train_one_step()
        for r in range(args.rounds):
            order = (("fp32", hw_fp32), ("bf16", hw_bf16)) if r % 2 == 0 else (("bf16", hw_bf16), ("fp32", hw_fp32))
            for label, hw in order:
                engine.hardware = hw
                tokens, t0 = 0, time.perf_counter()
                for _ in range(args.chunk):
                    tokens += engine.train_one_step()["ntokens"]
                dt = time.perf_counter() - t0
                per[label].append(tokens / dt)
                seconds[label] += dt
                # source length ~ target length on this pack: the target count stands for both
                flops[label] += model_flops_per_step(bundle.model, tokens, tokens)
    result = {"preset": preset, "embedding": embedding, "strategy": strategy, "max_tokens": args.max_tokens}
    counts = bundle.model.count_parameters()
    result["parameters_M"] = round(sum(counts.values()) / 1e6, 2)
    for label in ("fp32", "bf16"):
        result[f"{label}_tokens_per_s"] = round(statistics.median(per[label]))
        result[f"{label}_rounds"] = [round(x) for x in per[label]]
        result[f"{label}_model_gflops"] = round(flops[label] / seconds[label] / 1e9, 1)
    result["bf16_over_fp32"] = round(statistics.median(b / f for b, f in zip(per["bf16"], per["fp32"])), 3)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="work/prepared")
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=4000)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--chunk", type=int, default=4, help="steps per precision per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    hw_fp32 = hardware.setup("cpu", "fp32", args.threads)
    if not hardware.bf16_supported(hw_fp32.device):
        raise SystemExit("this CPU has no native bf16 (AMX / AVX512-BF16): nothing to compare")
    hw_bf16 = dataclasses.replace(hw_fp32, dtype=torch.bfloat16)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for name in args.setups:
        row = run_setup(name, args, hw_fp32, hw_bf16)
        row["setup"] = name
        row["bf16_fraction_of_matmul_peak"] = round(row["bf16_model_gflops"] / peak["bf16"], 3)
        row["fp32_fraction_of_matmul_peak"] = round(row["fp32_model_gflops"] / peak["fp32"], 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    peak_after = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    out = {
        "command": "python -m benchmarks.bench_train " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()
        ),
        "machine": {"cpu": platform.processor() or platform.machine(), "bf16": hardware.cpu_bf16_kind(), "threads": hw_fp32.threads,
                    "torch": torch.__version__},
        "matmul_gflops_before": {k: round(v) for k, v in peak.items()},
        "matmul_gflops_after": {k: round(v) for k, v in peak_after.items()},
        "setups": rows,
    }
    from mtmeta.scoring import write_json

    write_json(out, args.out)


if __name__ == "__main__":
    main()
