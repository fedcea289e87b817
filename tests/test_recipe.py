"""`mtmeta recipe run`: the whole pipeline on the minipack with a tiny model,
then a second run that reuses and resumes everything."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from mtmeta.cli import main
from mtmeta.recipe import results_table

from conftest import ADAPT_VOCAB, MAX_TOKENS, SRC_VOCAB, TGT_VOCAB


def recipe(tmp_path: Path, minipack: Path) -> Path:
    data = {
        "name": "pytest",
        "workdir": str(tmp_path / "work"),
        "targets": ["ro"],
        "prepare": {
            "sources": [{"type": "pack", "path": str(minipack)}],
            "output": str(tmp_path / "prepared"),
            "src_vocab_size": SRC_VOCAB,
            "tgt_vocab_size": TGT_VOCAB,
            "valid_per_lang": 20,
        },
        "train": {
            "strategy": "multitask",
            "model": "tiny",
            "max_steps": 4,
            "validate_every": 2,
            "bleu_sentences": 3,
            "max_tokens": MAX_TOKENS,
            "warmup_steps": 2,
        },
        "adapt": {
            "max_steps": 3,
            "validate_every": 3,
            "bleu_sentences": 4,
            "src_vocab_size": ADAPT_VOCAB,
            "max_tokens": MAX_TOKENS,
            "warmup_steps": 2,
        },
        "evaluate": {"max_sentences": 20, "beam": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_recipe_run_and_rerun(capsys, minipack: Path, tmp_path: Path) -> None:
    path = recipe(tmp_path, minipack)
    work = tmp_path / "work"
    assert main(["-q", "recipe", "run", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""

    results = json.loads((work / "results.json").read_text(encoding="utf-8"))
    assert results["recipe"] == "pytest"
    rows = results["results"]
    assert [r["lang"] for r in rows] == ["ro"]
    row = rows[0]
    assert isinstance(row["bleu"], float) and isinstance(row["chrf"], float)
    assert 0.0 <= row["bleu"] <= 100.0 and 0.0 < row["chrf"] <= 100.0
    assert row["bleu_signature"].startswith("nrefs:1|") and "chrF2" not in row["bleu_signature"]
    assert row["chrf_signature"].startswith("nrefs:1|")
    assert (row["test"], row["sentences"], row["beam"]) == ("newstest2016", 20, 1)
    assert (row["strategy"], row["tune"], row["pretrain_steps"], row["adapt_steps"]) == ("multitask", "all", 4, 3)
    hyp = Path(row["hypotheses"])
    assert hyp == work / "eval" / "ro-en.newstest2016.hyp"
    hyps = hyp.read_text(encoding="utf-8").split("\n")
    assert len(hyps) == 21 and hyps[-1] == ""  # 20 lines, newline-terminated
    assert row["checkpoint"] == str(work / "adapt-ro" / "best.pt")
    assert "| ro-en | newstest2016 | multitask | all |" in results_table(rows)

    prepared = tmp_path / "prepared"
    assert (prepared / "summary.json").is_file() and not (work / "prepared").exists()
    summary_mtime = (prepared / "summary.json").stat().st_mtime_ns
    train_log = (work / "train-multitask" / "train_log.jsonl").read_text()
    adapt_log = (work / "adapt-ro" / "train_log.jsonl").read_text()
    first_hyps = hyp.read_text(encoding="utf-8")

    # Second run, with logs: nothing is prepared, trained or adapted again.
    assert main(["recipe", "run", str(path)]) == 0
    _, err = capsys.readouterr()
    assert "already prepared from the same inputs and settings; reusing it" in err
    assert "resumed" in err and f"{work / 'train-multitask' / 'last.pt'} at step 4" in err
    assert f"{work / 'adapt-ro' / 'last.pt'} at step 3" in err
    assert (prepared / "summary.json").stat().st_mtime_ns == summary_mtime
    assert (work / "train-multitask" / "train_log.jsonl").read_text() == train_log
    assert (work / "adapt-ro" / "train_log.jsonl").read_text() == adapt_log
    again = json.loads((work / "results.json").read_text(encoding="utf-8"))["results"][0]
    assert (again["bleu"], again["chrf"], again["adapt_steps"]) == (row["bleu"], row["chrf"], 3)
    assert hyp.read_text(encoding="utf-8") == first_hyps
