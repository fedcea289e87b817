"""The long commands' allocator (mtmeta/allocator.py): when a command
re-executes itself under jemalloc, with what settings, and that doing so
changes nothing a run computes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mtmeta import allocator
from mtmeta.cli import main
from mtmeta.errors import ConfigError

from conftest import MAX_TOKENS

REPO = Path(__file__).resolve().parent.parent
LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_auto_preloads_jemalloc_with_the_settings_that_keep_memory_flat() -> None:
    env = allocator.reexec_environment({"PATH": "/bin"}, LIB, platform="linux")
    assert env["LD_PRELOAD"] == LIB
    assert env["MALLOC_CONF"] == allocator.JEMALLOC_CONF
    assert "lg_extent_max_active_fit:20" in env["MALLOC_CONF"]  # without it a run grew to 21 GB
    assert env[allocator.ENV_DONE] == "1" and env["PATH"] == "/bin"


def test_user_settings_are_kept() -> None:
    env = allocator.reexec_environment({"LD_PRELOAD": "/opt/libx.so", "MALLOC_CONF": "narenas:2"}, LIB, platform="linux")
    assert env["LD_PRELOAD"] == f"{LIB}:/opt/libx.so"
    assert env["MALLOC_CONF"] == "narenas:2"


@pytest.mark.parametrize("environ", [
    {"MTMETA_ALLOCATOR": "system"},
    {"MTMETA_ALLOCATOR": "jemalloc", allocator.ENV_DONE: "1"},  # never twice, even if the preload failed
    {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},  # preloaded by the user
])
def test_no_reexec(environ) -> None:
    assert allocator.reexec_environment(environ, LIB, platform="linux") is None


def test_auto_without_the_library_runs_as_it_is() -> None:
    assert allocator.reexec_environment({}, None, platform="linux") is None
    assert allocator.reexec_environment({}, LIB, platform="darwin") is None


def test_required_but_missing_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="no libjemalloc.so.2 found.*apt-get install libjemalloc2"):
        allocator.reexec_environment({"MTMETA_ALLOCATOR": "jemalloc"}, None, platform="linux")
    with pytest.raises(ConfigError, match="not Linux"):
        allocator.reexec_environment({"MTMETA_ALLOCATOR": "jemalloc"}, LIB, platform="darwin")


def test_unknown_choice_from_the_command_line(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setenv("MTMETA_ALLOCATOR", "tcmalloc")
    monkeypatch.setattr(sys, "argv", ["mtmeta", "train", "--data", str(tmp_path), "--output", str(tmp_path / "o")])
    assert main() == 2  # argv None: the process path, where the allocator is chosen
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MTMETA_ALLOCATOR='tcmalloc' unknown (auto, system, jemalloc)" in err[0]


def test_find_and_detect(tmp_path: Path) -> None:
    lib = tmp_path / "lib" / "x86_64-linux-gnu" / "libjemalloc.so.2"
    lib.parent.mkdir(parents=True)
    assert allocator.find_jemalloc((str(tmp_path / "lib" / "*" / "libjemalloc.so.2"),)) is None
    lib.write_bytes(b"")
    assert allocator.find_jemalloc((str(tmp_path / "lib" / "*" / "libjemalloc.so.2"),)) == str(lib)
    maps = tmp_path / "maps"
    maps.write_text(f"7f00-7f01 r-xp 00000000 08:01 1 {lib}\n")
    assert allocator.active(maps) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.active(maps) == "system"
    assert allocator.active(tmp_path / "missing") == "system"


@pytest.mark.skipif(allocator.find_jemalloc() is None or not sys.platform.startswith("linux"),
                    reason="no libjemalloc.so.2 on this machine (apt-get install libjemalloc2)")
def test_train_under_jemalloc_is_bit_identical(prepared: Path, tmp_path: Path) -> None:
    """`mtmeta train` as a process: under auto it re-executes itself with
    jemalloc (the log's segment record says which allocator ran), and the
    weights after 4 steps equal those of the system allocator to the bit."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"bleu_sentences": 0, "model": "tiny", "warmup_steps": 2, "log_every": 1}}))
    weights, segments = {}, {}
    for choice in ("auto", "system"):
        out = tmp_path / choice
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", allocator.ENV_DONE)}
        env.update(MTMETA_ALLOCATOR=choice, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        r = subprocess.run(
            [sys.executable, "-m", "mtmeta.cli", "-q", "train", "--config", str(cfg), "--data", str(prepared),
             "--output", str(out), "--max-tokens", str(MAX_TOKENS), "--max-steps", "4", "--validate-every", "2",
             "--langs", "de", "fr", "--threads", "1", "--seed", "3"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        log = [yaml.safe_load(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        segments[choice] = [rec["segment"]["hardware"] for rec in log if "segment" in rec]
        weights[choice] = torch.load(out / "last.pt", weights_only=True)["model"]
    assert segments["auto"] == [segments["auto"][0]] and "jemalloc allocator" in segments["auto"][0]
    assert "system allocator" in segments["system"][0]
    assert weights["auto"].keys() == weights["system"].keys()
    for name, tensor in weights["auto"].items():
        assert torch.equal(tensor, weights["system"][name]), name
