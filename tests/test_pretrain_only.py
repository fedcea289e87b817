"""`mtmeta compare FILE --pretrain-only NAMES`: the long pre-trainings run
where the grid reuses them; a later run with another thread count or device
resumes them (where it runs is not what it trains), other settings are refused."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from mtmeta.cli import main

from test_compare import grid


def test_pretrain_only_trains_named_entries_where_the_grid_reuses_them(capsys, tmp_path: Path, minipack: Path) -> None:
    from data_prep.prepare import prepare
    from mtmeta import config as C

    data = grid(tmp_path, minipack)
    data["train"]["threads"] = 1
    prepare(C.from_dict(C.PrepareConfig, data["prepare"]), log=lambda *_: None)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")

    assert main(["-q", "compare", str(path), "--pretrain-only", "multitask"]) == 0
    info = json.loads(capsys.readouterr().out)["multitask"]
    work = tmp_path / "work" / "pretrain"
    assert info["steps"] == 4 and (work / "multitask" / "done.json").is_file()
    assert not (work / "metanmt").exists()  # only what was named

    # Another thread count: the same pre-training (reused, not refused, not retrained).
    assert main(["-q", "compare", str(path), "--pretrain-only", "multitask", "--threads", "2"]) == 0
    again = json.loads(capsys.readouterr().out)["multitask"]
    assert again["checkpoint_sha256"] == info["checkpoint_sha256"]

    # A setting that changes the model is refused with one line.
    data["train"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["-q", "compare", str(path), "--pretrain-only", "multitask"]) == 2
    assert "started with other settings (lr)" in capsys.readouterr().err

    assert main(["-q", "compare", str(path), "--pretrain-only", "nope"]) == 2
    assert "not `pretrain` entries" in capsys.readouterr().err


def test_ctrl_c_during_a_cell_leaves_the_published_rows_as_an_uninterrupted_run(capsys, tmp_path: Path, minipack: Path, monkeypatch) -> None:
    """Issue 14.3: one Ctrl-C during a miniature compare used to change the
    published rows (the handler saved a mid-step state). Now the cell stops at
    a step boundary, no row is written for it, and the re-run gives the rows
    an uninterrupted run gives."""
    import os
    import signal

    from mtmeta.tasks import Task

    tiers = [{"name": "options", "strategies": ["multitask"], "tunes": ["all"], "sizes": [200], "seeds": [1, 2]}]

    def run(folder: Path) -> list[dict]:
        data = grid(folder, minipack, tiers=tiers, adapt={**grid(folder, minipack)["adapt"], "max_steps": 6, "validate_every": 2, "save_every": 1})
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "grid.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        code = main(["-q", "compare", str(path)])
        capsys.readouterr()
        return code, folder

    code, straight = run(tmp_path / "a")
    assert code == 0
    original = Task.next_batch
    calls = {"n": 0}

    def batch_then_ctrl_c(self):
        batch = original(self)  # the batch is drawn: Ctrl-C now lands mid-step
        if self.lang == "ro":
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGINT)
        return batch

    monkeypatch.setattr(Task, "next_batch", batch_then_ctrl_c)
    code, interrupted = run(tmp_path / "b")
    assert code == 130
    monkeypatch.undo()
    code, _ = run(tmp_path / "b")
    assert code == 0

    def rows(folder: Path) -> list[tuple]:
        lines = (folder / "results" / "results.jsonl").read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines:
            r = json.loads(line)
            hyp = (folder / "results" / "hyps" / Path(r["hypotheses"]).name).read_text(encoding="utf-8")
            out.append((r["id"], r["bleu"], r["chrf"], r["adapt_steps"], r["valid_score"], hyp))
        return sorted(out)

    assert rows(straight) == rows(interrupted)
