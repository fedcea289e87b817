"""Training speed under the system allocator (glibc) against jemalloc, on
the engine's own step: first-order MetaNMT with ULR on the cpu preset and
all 18 source languages of a prepared folder (bf16 where the CPU has it),
each allocator in its own process, alternating, several rounds.

    python -m benchmarks.bench_allocator --data work/prepared-ulr --steps 30 --rounds 2 --out results/speed/allocator.json
    LD_PRELOAD=.../libjemalloc.so.2 MALLOC_CONF=... python -m benchmarks.bench_allocator --memory --steps 100   # memory over a run

Speed only: 30 steps do not show memory growth; `--memory` does (it is how
the unbounded growth without `lg_extent_max_active_fit:20` was found,
results/speed/README.md). The jemalloc settings are the CLI's own
(mtmeta/allocator.py); the committed allocator_*.json of session 13 record
the settings they ran with.

Each child reports target tokens/s, user and kernel CPU seconds, minor page
faults, its peak memory, and the sum of its losses and parameters: equal
sums across allocators show that the allocator changed nothing but speed.
ULR query/key vectors are random (the speed does not depend on them).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from mtmeta.allocator import JEMALLOC_CONF, active as loaded, find_jemalloc  # what the CLI itself uses


def rss_mb() -> int:
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmRSS")).split()[1]) // 1024


LANGS = "bg cs da de el es et fr hu it lt nl pl pt ru sk sl sv".split()


def setup(data: str, strategy: str):
    """(bundle, engine) on the cpu preset with ULR and every source language of `data`, 1 thread."""
    import torch

    import benchmarks.bench_train as B
    from mtmeta import config as C, hardware
    from mtmeta.engine import Engine

    torch.set_num_threads(1)
    B.LANGS = [lang for lang in LANGS if os.path.isfile(f"{data}/data/{lang}-en/train.npz")]
    bundle, strat = B.build(data, "cpu", "ulr", strategy, 4000)
    hw = hardware.setup("cpu", "auto", 1)
    settings = C.TrainConfig(lr=5e-4, warmup_steps=100, max_steps=10**9, validate_every=0, save_every=0)
    tmp = tempfile.mkdtemp(prefix="bench_allocator-")  # the engine writes nothing here: validate/save off
    return bundle, Engine(bundle, strat, settings, tmp, log=lambda *_: None, progress=False, hardware=hw), hw


def memory(data: str, steps: int, strategy: str) -> None:
    """Memory over `steps` steps with one source-language validation after
    step 20, as the long runs validate, under this process's allocator (start
    it with LD_PRELOAD / MALLOC_CONF): a JSON line every 10 steps; stops past 12 GB."""
    import torch

    from mtmeta.data import PairData
    from mtmeta.validation import Validator

    bundle, engine, _ = setup(data, strategy)
    validator = Validator({lang: PairData.load(f"{data}/data/{lang}-en/valid.npz") for lang in bundle.languages()}, 180)
    t0, tokens = time.perf_counter(), 0
    for i in range(steps):
        if i == 20:
            bundle.model.eval()
            with torch.no_grad():
                nll = validator.evaluate(bundle)["valid_nll"]
            bundle.model.train()
            print("validated", round(nll, 3), "rss", rss_mb(), flush=True)
        tokens += engine.train_one_step()["ntokens"]
        if i % 10 == 9:
            print(json.dumps({"alloc": loaded(), "conf": os.environ.get("MALLOC_CONF", ""), "step": i + 1, "rss_mb": rss_mb(),
                              "tok_s": round(tokens / (time.perf_counter() - t0)),
                              "kernel_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_stime, 1)}), flush=True)
            if rss_mb() > 12000:
                print("RSS over 12 GB: stopped")
                return


def child(data: str, steps: int, strategy: str) -> dict:
    bundle, engine, hw = setup(data, strategy)
    for _ in range(5):  # caches and the allocator warm
        engine.train_one_step()
    r0, t0, tokens, losses = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0, []
    for _ in range(steps):
        out = engine.train_one_step()
        tokens += out["ntokens"]
        losses.append(float(out["loss"]))
    seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "allocator": loaded(), "languages": len(bundle.languages()), "strategy": strategy, "precision": "bf16" if hw.bf16 else "fp32",
        "steps": steps, "tokens": tokens, "tokens_per_s": round(tokens / seconds),
        "user_s": round(r1.ru_utime - r0.ru_utime, 1), "kernel_s": round(r1.ru_stime - r0.ru_stime, 1),
        "minor_faults": r1.ru_minflt - r0.ru_minflt, "peak_rss_mb": r1.ru_maxrss // 1024,
        "loss_sum": repr(sum(losses)), "param_sum": repr(float(sum(p.double().sum() for p in bundle.model.parameters()))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="work/prepared-ulr")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--strategy", choices=["metanmt", "multitask"], default="metanmt")
    p.add_argument("--out", default="")
    p.add_argument("--memory", action="store_true", help="memory over --steps steps with a validation, in this process (its allocator)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory:
        memory(args.data, args.steps, args.strategy)
        return
    if args.child:
        print(json.dumps(child(args.data, args.steps, args.strategy)))
        return
    library = find_jemalloc()
    if library is None:
        sys.exit("bench_allocator: no jemalloc library on this system (Debian/Ubuntu: apt-get install libjemalloc2)")
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    variants = {"system": base, "jemalloc": {**base, "LD_PRELOAD": library, "MALLOC_CONF": JEMALLOC_CONF}}
    cmd = [sys.executable, "-m", "benchmarks.bench_allocator", "--child", "--data", args.data, "--steps", str(args.steps),
           "--strategy", args.strategy]
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):  # alternate who goes first
            done = subprocess.run(cmd, env=variants[name], capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    result = {
        "command": "python -m benchmarks.bench_allocator " + " ".join(sys.argv[1:]),
        "jemalloc": library, "malloc_conf": JEMALLOC_CONF, "runs": runs,
        "tokens_per_s": {name: statistics.median(x["tokens_per_s"] for x in rs) for name, rs in runs.items()},
        "same_results": len({(x["loss_sum"], x["param_sum"]) for rs in runs.values() for x in rs}) == 1,
    }
    result["jemalloc_over_system"] = round(result["tokens_per_s"]["jemalloc"] / result["tokens_per_s"]["system"], 3)
    print(json.dumps({k: result[k] for k in ("tokens_per_s", "jemalloc_over_system", "same_results")}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
