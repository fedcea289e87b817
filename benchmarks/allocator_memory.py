"""Memory (RSS) and speed of first-order MetaNMT training (cpu preset, ULR,
the 18 source languages of work/prepared-ulr, bf16, 1 thread) over STEPS
steps with one source-language validation after step 20, as the long runs
do, under whatever allocator the process was started with:

    PYTHONPATH=. python benchmarks/allocator_memory.py 100
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 PYTHONPATH=. python benchmarks/allocator_memory.py 100

Prints a JSON line every 10 steps; stops once RSS passes 12 GB."""
import json, os, resource, sys, tempfile, time
import torch
torch.set_num_threads(1)
import benchmarks.bench_train as B
from mtmeta import config as C, hardware
from mtmeta.data import PairData
from mtmeta.engine import Engine
from mtmeta.validation import Validator
B.LANGS = "bg cs da de el es et fr hu it lt nl pl pt ru sk sl sv".split()
steps = int(sys.argv[1])
bundle, strat = B.build("work/prepared-ulr", "cpu", "ulr", "metanmt", 4000)
hw = hardware.setup("cpu", "bf16", 1)
val = Validator({l: PairData.load(f"work/prepared-ulr/data/{l}-en/valid.npz") for l in B.LANGS}, 180)
settings = C.TrainConfig(lr=5e-4, warmup_steps=100, max_steps=10**9, validate_every=0, save_every=0)
rss = lambda: int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) // 1024
with tempfile.TemporaryDirectory() as tmp:
    eng = Engine(bundle, strat, settings, tmp, log=lambda *_: None, progress=False, hardware=hw)
    t0, tok = time.perf_counter(), 0
    for i in range(steps):
        if i == 20:
            bundle.model.eval()
            with torch.no_grad():
                m = val.evaluate(bundle)
            bundle.model.train()
            print("validated", round(m["valid_nll"], 3), "rss", rss(), flush=True)
        tok += eng.train_one_step()["ntokens"]
        if i % 10 == 9:
            r = resource.getrusage(resource.RUSAGE_SELF)
            print(json.dumps({"alloc": "jemalloc" if "libjemalloc" in open("/proc/self/maps").read() else "system", "conf": os.environ.get("MALLOC_CONF", ""), "step": i + 1, "rss_mb": rss(),
                              "tok_s": round(tok / (time.perf_counter() - t0)), "kernel_s": round(r.ru_stime, 1)}), flush=True)
            if rss() > 12000:
                print("RSS over 12 GB: stopped"); break
