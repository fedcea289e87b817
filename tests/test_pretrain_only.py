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
