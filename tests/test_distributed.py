"""Data-parallel training under torchrun (mtmeta/distributed.py): two CPU
workers on loopback with gloo train the tiny model; both end with the same
parameters, stop together, and a run stopped by a signal to one worker
resumes to exactly the parameters of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mtmeta import distributed
from mtmeta.checkpoint import read_checkpoint

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is unavailable"
)

WORKER = textwrap.dedent(
    '''
    """A torchrun worker: train the tiny model, save this rank's result."""
    import dataclasses
    import os
    import signal
    import sys

    import torch

    torch.set_num_threads(1)

    from mtmeta import config as C, distributed
    from mtmeta.engine import Engine
    from mtmeta.strategies.supervised import SupervisedStrategy
    from mtmeta.training import train

    prepared, output, steps, report, term_at, minutes = sys.argv[1:7]
    steps, term_at, minutes = int(steps), int(term_at), float(minutes)
    rank, world = distributed.init_from_env()
    assert world == 2 and distributed.is_distributed() and distributed.is_main() == (rank == 0)
    out = {"rank": rank, "world": world}

    if term_at < 0:  # helpers first: grads None on some ranks only, broadcast of rank 0's values
        a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
        if rank == 0:
            a.grad = torch.ones(3)  # a language only rank 0 sampled
        c.grad = torch.full((3,), float(rank + 1))
        distributed.all_reduce_gradients([a, b, c])
        out["grad_a"], out["grad_b_none"], out["grad_c"] = a.grad.tolist(), b.grad is None, c.grad.tolist()
        m = torch.nn.Linear(2, 2)
        with torch.no_grad():
            m.weight.fill_(rank + 10.0)
        distributed.broadcast_parameters(m)
        out["broadcast"] = m.weight.flatten().tolist()
        out["seeds"] = [distributed.rank_seed(1, r) for r in range(2)]

    engines = []
    original_run, original_step = Engine.run, SupervisedStrategy.train_step

    def run(self, *a, **k):
        engines.append(self)
        return original_run(self, *a, **k)

    local_tokens = []

    def step(self, engine):
        stats = original_step(self, engine)
        local_tokens.append(stats["ntokens"])
        if engine.step == term_at - 1 and rank == 1:  # SIGTERM reaches rank 1 only, during step term_at
            os.kill(os.getpid(), signal.SIGTERM)
        if minutes and rank == 1:  # rank 1's clock runs far ahead: rank 0's must decide
            engine.elapsed += 3600
        return stats

    Engine.run, SupervisedStrategy.train_step = run, step
    cfg = C.TrainConfig(
        data=prepared,
        output=output,
        strategy="multitask",
        model=dataclasses.replace(C.MODEL_PRESETS["tiny"]),
        max_steps=steps,
        max_minutes=minutes,
        validate_every=3,
        save_every=2,
        bleu_sentences=2,
        max_tokens=300,
        warmup_steps=4,
        log_every=1000,
    )
    torch.manual_seed(rank)  # different initial weights on each rank: the engine must broadcast rank 0's
    try:
        result = train(cfg, log=lambda *_: None, progress=False, resume=True)
        out["interrupted"] = False
    except KeyboardInterrupt:
        result = {}
        out["interrupted"] = True
    engine = engines[0]
    out.update(
        step=engine.step,
        tokens=engine.tokens,
        result=result,
        local_tokens=sum(local_tokens),
        sampler=repr(engine.strategy.sampler.state_dict()),
        model={k: v.detach().clone() for k, v in engine.model.state_dict().items()},
    )
    torch.save(out, os.path.join(report, f"rank{rank}.pt"))
    distributed.shutdown()
    '''
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    script: Path, prepared: Path, output: Path, steps: int, report: Path, term_at: int = -1, minutes: float = 0.0
) -> list[dict]:
    report.mkdir(parents=True, exist_ok=True)
    # MTMETA_DIST_TIMEOUT_MIN: a worker stuck in a collective gives up instead of waiting an hour.
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MTMETA_DIST_TIMEOUT_MIN": "2"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(script), str(prepared), str(output), str(steps), str(report), str(term_at), str(minutes),
    ]  # fmt: skip
    # Own process group, so that a hang is cleaned up whole (torchrun and both workers).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun hung (killed after 120 s):\n{stdout[-3000:]}\n{stderr[-5000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return [torch.load(report / f"rank{r}.pt", weights_only=False) for r in range(2)]


def same_model(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_single_process_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.init_from_env() == (0, 1)
    assert distributed.is_main() and not distributed.is_distributed()
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 1) != 7
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.all_reduce_gradients([p])
    distributed.broadcast_parameters(torch.nn.Linear(2, 2))
    distributed.barrier()
    assert p.grad.tolist() == [3.0, 3.0]
    assert distributed.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0] and distributed.all_gather_object("x") == ["x"]


def test_two_workers_train_in_step_and_resume(prepared: Path, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")

    # Uninterrupted: 6 steps.
    straight = torchrun(script, prepared, tmp_path / "straight", 6, tmp_path / "r-straight")
    r0, r1 = straight
    # The helpers: a grad only rank 0 had is averaged with rank 1's zeros; an untouched one stays None.
    assert r0["grad_a"] == r1["grad_a"] == [0.5] * 3 and r0["grad_b_none"] and r1["grad_b_none"]
    assert r0["grad_c"] == r1["grad_c"] == [1.5] * 3
    assert r0["broadcast"] == r1["broadcast"] == [10.0] * 4
    assert r0["seeds"][0] != r0["seeds"][1]
    # Training: same step count, same tokens (counted over both ranks), identical parameters.
    assert r0["step"] == r1["step"] == 6 and not r0["interrupted"] and not r1["interrupted"]
    assert r0["tokens"] == r1["tokens"] == r0["local_tokens"] + r1["local_tokens"]
    assert r0["result"]["step"] == 6 and r0["result"]["tokens"] == r0["tokens"]
    assert same_model(r0["model"], r1["model"])
    assert r0["sampler"] != r1["sampler"], "both ranks drew the same batches"
    last = read_checkpoint(tmp_path / "straight" / "last.pt")
    assert last["train_state"]["step"] == 6 and same_model(last["model"], r0["model"])
    assert [h["step"] for h in last["history"]] == [0, 3, 6]
    assert (tmp_path / "straight" / "best.pt").is_file()

    # SIGTERM to rank 1 alone during step 3: both ranks stop after step 3 and save.
    killed = torchrun(script, prepared, tmp_path / "resumed", 6, tmp_path / "r-killed", term_at=3)
    assert [r["step"] for r in killed] == [3, 3] and all(r["interrupted"] for r in killed)
    assert same_model(killed[0]["model"], killed[1]["model"])
    ts = read_checkpoint(tmp_path / "resumed" / "last.pt")["train_state"]
    assert ts["step"] == 3 and ts["world_size"] == 2 and len(ts["ranks"]) == 2

    # Run again: resumes at 3 and ends at 6 with the uninterrupted run's parameters on both ranks.
    resumed = torchrun(script, prepared, tmp_path / "resumed", 6, tmp_path / "r-resumed")
    assert [r["step"] for r in resumed] == [6, 6]
    assert resumed[0]["tokens"] == resumed[1]["tokens"] == r0["tokens"]
    assert same_model(resumed[0]["model"], resumed[1]["model"])
    assert same_model(resumed[0]["model"], r0["model"])
    assert [r["sampler"] for r in resumed] == [r["sampler"] for r in straight]
    last = read_checkpoint(tmp_path / "resumed" / "last.pt")
    assert [h["step"] for h in last["history"]] == [0, 3, 6]


def test_minutes_budget_is_rank_0s(prepared: Path, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    # Rank 1's clock says an hour has passed after its first step; rank 0's 0.6 s budget rules.
    r0, r1 = torchrun(script, prepared, tmp_path / "minutes", 0, tmp_path / "r", term_at=0, minutes=0.01)
    assert r0["step"] == r1["step"] > 1 and r0["tokens"] == r1["tokens"]
    assert same_model(r0["model"], r1["model"])
    ts = read_checkpoint(tmp_path / "minutes" / "last.pt")["train_state"]
    assert ts["step"] == r0["step"] and 0.6 <= ts["elapsed"] < 600
