"""Decoding speed: the native fairseq engine (fp32, bf16 autocast) against
CTranslate2 (int8, float32) on the first N sentences of a prepared test set.

The machine is shared and noisy, so the variants run interleaved (one
round = each variant once, in turn), several rounds, and the speed ratios
against native fp32 are taken within each round and summarised by their
median. Each variant's BLEU/chrF is scored against the reference and
against native fp32's output (how much the faster path changes the
translations). A short profile shows where native decoding time goes.

    python -m benchmarks.bench_decode --checkpoint work/adapt-ro/best.pt --data work/prepared \\
        --lang ro --sentences 500 --beam 4 --rounds 3 --out results/decode_speed.json

Everything is measured on the machine at hand: --device auto picks CUDA
when there is one (both engines), --threads 0 all cores. A variant the
hardware cannot run (bf16 without AMX/AVX512-BF16 or a bf16 GPU, a compute
type CTranslate2 lacks here) is recorded as skipped with the reason.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from data_prep.prepare import read_protected
from mtmeta.scoring import score
from mtmeta.checkpoint import load_bundle
from mtmeta.decoding import translate
from mtmeta.errors import MtmetaError
from mtmeta.hardware import setup

VARIANTS = ("native-fp32", "native-bf16", "ct2-int8", "ct2-float32")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_variants(a, export_dir: Path) -> tuple[dict, dict]:
    """name -> function(sentences) -> hypotheses; and name -> why it was skipped."""
    runners, skipped = {}, {}
    for precision in ("fp32", "bf16"):
        name = f"native-{precision}"
        try:
            hw = setup(a.device, precision, a.threads)
        except MtmetaError as e:
            skipped[name] = str(e)
            continue
        bundle, _ = load_bundle(a.checkpoint)
        bundle.model.fold_embeddings()
        runners[name] = (lambda b, h: lambda src: translate(b, a.lang, src, beam=a.beam, batch_sentences=a.batch_size, hw=h))(bundle, hw)
    try:
        from mtmeta.export import ct2_device, export_ctranslate2, open_export

        export_ctranslate2(a.checkpoint, export_dir, quantization="float32")
        device = ct2_device(a.device)
    except MtmetaError as e:
        for ct in ("int8", "float32"):
            skipped[f"ct2-{ct}"] = str(e)
        return runners, skipped
    for ct in ("int8", "float32"):
        name = f"ct2-{ct}"
        try:
            model = open_export(export_dir, compute_type=ct, device=device, threads=a.threads or torch.get_num_threads())
        except MtmetaError as e:
            skipped[name] = str(e)
            continue
        runners[name] = (lambda m: lambda src: m.translate(a.lang, src, beam=a.beam, batch_sentences=a.batch_size))(model)
    return runners, skipped


def profile_native(a, src: list[str]) -> dict:
    """Top entries of torch.profiler (operators, with fairseq's encoder/decoder
    record_function ranges) and cProfile (Python functions) for one native
    fp32 decode of `src`."""
    hw = setup(a.device, "fp32", a.threads)
    bundle, _ = load_bundle(a.checkpoint)
    bundle.model.fold_embeddings()
    translate(bundle, a.lang, src[:4], beam=a.beam, hw=hw)  # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU]
    if hw.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        translate(bundle, a.lang, src, beam=a.beam, batch_sentences=a.batch_size, hw=hw)
    cuda = hw.device.type == "cuda"
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = []
    for ev in sorted(prof.key_averages(), key=lambda e: getattr(e, sort, 0) or 0, reverse=True)[: a.profile_top]:
        row = {"name": ev.key, "calls": ev.count, "self_cpu_ms": round(ev.self_cpu_time_total / 1000, 2), "cpu_total_ms": round(ev.cpu_time_total / 1000, 2)}
        if cuda:
            row["self_device_ms"] = round(getattr(ev, "self_device_time_total", 0) / 1000, 2)
        rows.append(row)
    ranges = {
        ev.key: round(ev.cpu_time_total / 1000, 2)
        for ev in prof.key_averages()
        if ev.key.startswith("EnsembleModel:")
    }
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    translate(bundle, a.lang, src, beam=a.beam, batch_sentences=a.batch_size, hw=hw)
    pr.disable()
    seconds = time.perf_counter() - t0
    stats = pstats.Stats(pr, stream=io.StringIO())
    def top(key: int) -> list[dict]:
        items = sorted(stats.stats.items(), key=lambda kv: kv[1][key], reverse=True)[: a.profile_top]
        return [{"function": f"{Path(file).name}:{line}({func})", "calls": nc, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)}
                for (file, line, func), (cc, nc, tt, ct, _) in items]
    return {
        "sentences": len(src),
        "torch_profiler_top_by_" + sort: rows,
        "torch_profiler_ranges_ms": ranges,
        "cprofile_seconds": round(seconds, 2),
        "cprofile_top_by_tottime": top(2),  # where the time is spent
        "cprofile_top_by_cumtime": top(3),  # which calls it is spent under
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="an mtmeta checkpoint that knows --lang")
    p.add_argument("--data", required=True, help="prepared folder (its test set of --lang is read)")
    p.add_argument("--lang", default="ro")
    p.add_argument("--test", help="test set name (default: the language's test set)")
    p.add_argument("--sentences", type=int, default=500, help="first N lines of the test set")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each variant once per round)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch and CTranslate2 threads (0: all cores)")
    p.add_argument("--profile-sentences", type=int, default=64, help="sentences for the native profile (0: no profile)")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--export-dir", help="where the CTranslate2 export goes (default: a temporary folder)")
    p.add_argument("--out", required=True, help="JSON file to write")
    a = p.parse_args(argv)

    text = read_protected(a.data, a.lang, "test", a.test)
    src, refs = text.src[: a.sentences], text.tgt[: a.sentences]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        export_dir = Path(a.export_dir) if a.export_dir else Path(tmp) / "ct2"
        runners, skipped = build_variants(a, export_dir)
        for name, why in skipped.items():
            log(f"{name}: skipped ({why})")
        for name, run in runners.items():  # warm-up: first-call costs (allocations, kernel choice) out of the timings
            run(src[: min(8, len(src))])
        seconds: dict[str, list[float]] = {n: [] for n in runners}
        hyps: dict[str, list[str]] = {}
        for r in range(a.rounds):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))  # no variant always first
            for name in order:
                t0 = time.perf_counter()
                out = runners[name](src)
                seconds[name].append(time.perf_counter() - t0)
                hyps.setdefault(name, out)
                log(f"round {r + 1}/{a.rounds} {name}: {len(src) / seconds[name][-1]:.1f} sentences/s")
        profile = profile_native(a, src[: a.profile_sentences]) if a.profile_sentences else None
    base = "native-fp32"
    variants = {}
    for name in runners:
        v = {
            "seconds": [round(s, 3) for s in seconds[name]],
            "sentences_per_s_median": round(len(src) / statistics.median(seconds[name]), 2),
            "vs_reference": {k: score(hyps[name], refs)[k] for k in ("bleu", "chrf")},
        }
        if base in runners:
            v["speed_ratio_vs_native_fp32"] = {
                "per_round": [round(b / s, 3) for b, s in zip(seconds[base], seconds[name])],
                "median": round(statistics.median(b / s for b, s in zip(seconds[base], seconds[name])), 3),
            }
            v["vs_native_fp32_output"] = {k: score(hyps[name], hyps[base])[k] for k in ("bleu", "chrf")}
            v["identical_lines_vs_native_fp32"] = sum(x == y for x, y in zip(hyps[name], hyps[base]))
        variants[name] = v
    hw = setup(a.device, "fp32", a.threads)
    import ctranslate2

    from mtmeta.safe_io import sha256_file

    result = {
        "what": "decoding speed, native fairseq vs CTranslate2; ratios are within-round medians",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": {"hardware": hw.describe(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "ctranslate2": ctranslate2.__version__,
                    "ct2_compute_types": sorted(ctranslate2.get_supported_compute_types("cuda" if ctranslate2.get_cuda_device_count() else "cpu"))},
        "checkpoint": {"path": a.checkpoint, "sha256": sha256_file(a.checkpoint)},
        "data": {"folder": a.data, "lang": a.lang, "test": text.name, "sentences": len(src)},
        "settings": {"beam": a.beam, "batch_sentences": a.batch_size, "rounds": a.rounds, "threads": hw.threads},
        "variants": variants,
        "skipped": skipped,
        "profile_native_fp32": profile,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    summary = {n: {"sentences/s": v["sentences_per_s_median"], "x native fp32": v.get("speed_ratio_vs_native_fp32", {}).get("median"),
                   "bleu": v["vs_reference"]["bleu"], "bleu vs fp32": v.get("vs_native_fp32_output", {}).get("bleu")} for n, v in variants.items()}
    print(json.dumps(summary, indent=1))
    return result


if __name__ == "__main__":
    main()
