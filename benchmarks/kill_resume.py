"""Kill `mtmeta train` / `mtmeta adapt` at random moments, resume, and
compare with an uninterrupted run (issue 14).

For each command (train, adapt) and each signal (SIGKILL; SIGINT = Ctrl-C,
which stops at the next step boundary and saves), N trials: start the run
into an empty folder, send the signal, then run the same command again
until it finishes (resuming from last.pt), and compare with one
uninterrupted run of the same command. The signal comes
at a random step (0 = during the starting validation) plus up to 50 ms,
so it lands in training steps, validations and checkpoint writes.

- weights: last.pt and best.pt model tensors, optimizer state and step
  counts bit-identical;
- log rows: train_log.jsonl's training and validation records, by step:
  lost (in the uninterrupted log, not in the resumed one) or duplicated.

Tiny model on a minipack-prepared folder, one thread; about 6 minutes on a
shared 2-core machine (`wall_minutes` in the result):

    python benchmarks/kill_resume.py --trials 6 --output results/faults/kill_resume.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
MTMETA = [sys.executable, "-m", "mtmeta.cli", "-q"]

TRAIN = {"train": {"model": "tiny", "max_steps": 60, "validate_every": 20, "save_every": 10, "log_every": 1,
                   "bleu_sentences": 0, "select_metric": "loss", "max_tokens": 400, "warmup_steps": 10,
                   "langs": ["de", "fr"], "threads": 1, "seed": 1}}
ADAPT = {"adapt": {"lang": "ro", "max_steps": 40, "validate_every": 10, "save_every": 5, "log_every": 1,
                   "bleu_sentences": 0, "select_metric": "loss", "patience": 0, "max_tokens": 400, "warmup_steps": 5,
                   "src_vocab_size": 200, "threads": 1, "seed": 1}}


def command(kind: str, work: Path, out: Path) -> list[str]:
    cfg = work / f"{kind}.yaml"
    if kind == "train":
        return MTMETA + ["train", "--config", str(cfg), "--data", str(work / "prep"), "--output", str(out)]
    return MTMETA + ["adapt", "--config", str(cfg), "--data", str(work / "prep"), "--output", str(out),
                     "--checkpoint", str(work / "reference-train" / "best.pt")]


def run_to_end(cmd: list[str]) -> float:
    t0 = time.time()
    r = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return time.time() - t0


def logged_step(log: Path) -> int:
    """The last training step train_log.jsonl records (-1: none yet)."""
    try:
        lines = log.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in r:
            return r["step"]
    return 0 if lines[0] else -1


def interrupt(cmd: list[str], out: Path, sig: int, at_step: int, extra: float) -> dict:
    """Start `cmd`; once its log records step `at_step` (0: the starting
    validation), wait `extra` seconds and send `sig`. A step's record is
    written just before that step's validation and save, so signals land in
    steps, validations and checkpoint writes alike."""
    log = out / "train_log.jsonl"
    # SIGINT as a terminal's Ctrl-C delivers it: default handling, even when this script
    # runs in the background (where the shell hands children SIGINT ignored).
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while logged_step(log) < at_step and proc.poll() is None:
        time.sleep(0.005)
    step_seen = logged_step(log)
    time.sleep(extra)
    finished_first = proc.poll() is not None
    if sig and not finished_first:
        proc.send_signal(sig)
    _, err = proc.communicate()
    return {"returncode": proc.returncode, "finished_before_signal": finished_first, "step_seen": step_seen,
            "stderr_tail": err.strip()[-200:]}


def state_of(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # nan
        return True
    return a == b


def compare_runs(ref: Path, got: Path) -> dict:
    out = {}
    for name in ("last.pt", "best.pt"):
        a, b = state_of(ref / name), state_of(got / name)
        ta, tb = a.get("train_state", {}), b.get("train_state", {})
        out[name] = {
            "model": same(a["model"], b["model"]),
            "optimizer": same(ta.get("optimizer"), tb.get("optimizer")),
            "step": (ta.get("step"), tb.get("step")),
            "history": same([{k: v for k, v in h.items() if k != "minutes"} for h in a.get("history", [])],
                            [{k: v for k, v in h.items() if k != "minutes"} for h in b.get("history", [])]),
        }
    identical = all(v["model"] and v["optimizer"] and v["step"][0] == v["step"][1] and v["history"] for v in out.values())
    rows_ref, rows_got = log_rows(ref), log_rows(got)
    count = Counter(k for k, _ in rows_got)
    ref_keys = {k for k, _ in rows_ref}
    values_ref = dict(rows_ref)
    out["identical"] = identical
    out["rows_lost"] = len(ref_keys - set(count))
    out["rows_duplicated"] = sum(n - 1 for n in count.values() if n > 1)
    out["rows_extra"] = len(set(count) - ref_keys)
    out["validation_values_equal"] = all(values_ref.get(k) == v for k, v in rows_got if k[0] == "validation")
    return out


def log_rows(folder: Path) -> list[tuple[tuple[str, int], object]]:
    """(kind, step) -> what must match: training records' loss, validation metrics (minus wall time)."""
    rows = []
    for line in (folder / "train_log.jsonl").read_text(encoding="utf-8").split("\n")[:-1]:
        r = json.loads(line)  # every line must parse
        if "validation" in r:
            v = {k: x for k, x in r["validation"].items() if k != "minutes"}
            rows.append((("validation", v["step"]), v))
        elif "loss" in r:
            rows.append((("train", r["step"]), r["loss"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5, help="per command and signal")
    ap.add_argument("--work", default="work/h4")
    ap.add_argument("--output", default="results/faults/kill_resume.json")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = (REPO / args.work).resolve()
    t_start = time.time()
    prep = work / "prep"
    if not (prep / "summary.json").is_file():
        subprocess.run(MTMETA + ["prepare", "--pack", "tests/fixtures/minipack", "--output", str(prep),
                                 "--src-vocab-size", "250", "--tgt-vocab-size", "400"], env=ENV, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    import yaml

    (work / "train.yaml").write_text(yaml.safe_dump(TRAIN))
    (work / "adapt.yaml").write_text(yaml.safe_dump(ADAPT))
    kr = work / "kill_resume"
    shutil.rmtree(kr, ignore_errors=True)
    report = {"command": f"python benchmarks/kill_resume.py --trials {args.trials} --seed {args.seed}",
              "settings": {**TRAIN, **ADAPT}, "trials": [], "summary": {}}
    for kind in ("train", "adapt"):
        ref = work / f"reference-{kind}"
        shutil.rmtree(ref, ignore_errors=True)
        t0 = time.time()
        run_to_end(command(kind, work, ref))
        print(f"{kind}: uninterrupted run {time.time() - t0:.1f} s", flush=True)
        max_steps = (TRAIN["train"] if kind == "train" else ADAPT["adapt"])["max_steps"]
        for sig in (signal.SIGKILL, signal.SIGINT):
            s = {"kills": 0, "finished_before_signal": 0, "resumes_identical": 0, "rows_lost": 0, "rows_duplicated": 0, "rows_extra": 0}
            for trial in range(args.trials):
                out = kr / f"{kind}-{sig.name}-{trial}"
                at_step, extra = rng.randint(0, max_steps - 1), rng.uniform(0.0, 0.05)
                info = interrupt(command(kind, work, out), out, sig, at_step, extra)
                if info["finished_before_signal"]:  # cannot happen before max_steps; kept honest
                    s["finished_before_signal"] += 1
                    shutil.rmtree(out, ignore_errors=True)
                    continue
                s["kills"] += 1
                resumes = 0
                if not (out / "last.pt").is_file() or info["returncode"] != 0:
                    run_to_end(command(kind, work, out))
                    resumes = 1
                result = compare_runs(ref, out)
                s["resumes_identical"] += bool(result["identical"])
                for k in ("rows_lost", "rows_duplicated", "rows_extra"):
                    s[k] += result[k]
                report["trials"].append({"command": kind, "signal": sig.name, "at_step": at_step, "extra_s": round(extra, 3), **info,
                                         "resumed": resumes, **result})
                print(f"  {kind} {sig.name} at step {info['step_seen']} (+{extra:.2f} s): rc {info['returncode']}, identical {result['identical']}, "
                      f"rows lost {result['rows_lost']} dup {result['rows_duplicated']}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            report["summary"][f"{kind} {sig.name}"] = s
    total = Counter()
    for s in report["summary"].values():
        total.update(s)
    report["summary"]["total"] = dict(total)
    report["wall_minutes"] = round((time.time() - t_start) / 60, 1)
    out_path = REPO / args.output
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
