"""`mtmeta compare`: a miniature grid (2 source languages, 1 target, tiny
model, 2 adapt-set sizes, 1 seed) end to end, its schema, the summary
against results.jsonl, re-scoring from the hypothesis files, and resuming."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from sacrebleu.metrics import BLEU, CHRF

from mtmeta import config as C
from mtmeta.checkpoint import read_checkpoint
from mtmeta.cli import main
from mtmeta.compare import adapt_set, expand, load_rows, resolve_best
from mtmeta.errors import ConfigError, DataError
from evaluation.compare_report import fmt
from evaluation.rescore import main as rescore_main, rescore

from conftest import ADAPT_VOCAB, MAX_TOKENS, SRC_VOCAB, TGT_VOCAB

ROW_KEYS = {
    "schema", "id", "tiers", "strategy", "lang", "tune", "size", "draw", "seed", "pretrain", "adapt_sentences",
    "adapt_set", "adapt_lines", "adapt_steps", "adapt_tokens", "valid_metric", "valid_score", "test", "sentences",
    "bleu", "chrf", "tok_bleu", "bleu_signature", "chrf_signature", "tok_bleu_signature", "beam", "hypotheses",
    "reference", "checkpoint", "adapt_seconds", "translate_seconds", "wall_seconds", "cell_settings",
    "pretrain_tokens", "adapt_best_step", "adapt_stopped_early", "valid_bleu",
}


def grid(tmp_path: Path, minipack: Path, **changes) -> dict:
    data = {
        "name": "mini",
        "workdir": str(tmp_path / "work"),
        "results": str(tmp_path / "results"),
        "targets": ["ro"],
        "full_size": 200,
        "prepare": {
            "sources": [{"type": "pack", "path": str(minipack)}],
            "output": str(tmp_path / "prepared"),
            "train_langs": ["de", "fr"],
            "target_langs": ["ro"],
            "src_vocab_size": SRC_VOCAB,
            "tgt_vocab_size": TGT_VOCAB,
            "valid_per_lang": 20,
        },
        "train": {"model": "tiny", "max_steps": 4, "validate_every": 2, "bleu_sentences": 0, "max_tokens": MAX_TOKENS, "warmup_steps": 2, "save_every": 2},
        "pretrain": {"multitask": {"strategy": "multitask"}, "metanmt": {"strategy": "metanmt", "meta": {"variant": "fomaml"}}},
        "scratch_model": "tiny",
        "adapt": {"max_steps": 3, "validate_every": 3, "bleu_sentences": 0, "select_metric": "loss", "src_vocab_size": ADAPT_VOCAB, "max_tokens": MAX_TOKENS, "warmup_steps": 2},
        "evaluate": {"beam": 1, "batch_sentences": 32, "max_sentences": 20},
        "bootstrap_samples": 50,
        "tiers": [
            {"name": "options", "strategies": ["multitask", "metanmt"], "tunes": ["all", "emb"], "sizes": [200]},
            {"name": "headline", "strategies": ["scratch", "multitask", "metanmt"], "tunes": ["best"], "sizes": [200], "seeds": [1, 2]},
            {"name": "curves", "strategies": ["multitask", "metanmt"], "tunes": ["best"], "sizes": [0, 100]},
        ],
    }
    data.update(changes)
    return data


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def markdown_table(text: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first table after `heading`: first cell -> other cells."""
    block = text.split(heading, 1)[1]
    rows = {}
    for line in block.splitlines():
        if line.startswith("| ") and not line.startswith("| |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def test_compare_miniature_grid(capsys, monkeypatch, minipack: Path, tmp_path: Path) -> None:
    path = write(tmp_path, grid(tmp_path, minipack))
    assert main(["-q", "compare", str(path)]) == 0
    results = tmp_path / "results"
    rows = load_rows(results / "results.jsonl")
    # options 4 + headline: scratch x 2 seeds + multitask/metanmt seed 2 (their seed-1 cells
    # are option cells) + curves: zero-shot 2 + size-100 2
    assert len(rows) == 12
    assert len({r["id"] for r in rows}) == 12
    for r in rows:
        assert set(r) == ROW_KEYS, set(r) ^ ROW_KEYS
        assert r["schema"] == 1 and r["lang"] == "ro" and r["seed"] in (1, 2) and r["test"] == "newstest2016"
        assert r["sentences"] == 20 and r["beam"] == 1
        assert r["bleu_signature"].startswith("nrefs:1|") and r["tok_bleu_signature"].startswith("moses-tokenised+")
        assert 0 <= r["bleu"] <= 100 and 0 < r["chrf"] <= 100 and 0 <= r["tok_bleu"] <= 100
        assert r["adapt_sentences"] == (200 if r["size"] in (0, 200) else 100)
        assert r["adapt_steps"] == (0 if r["size"] == 0 else 3)
        assert r["pretrain_tokens"] == 0 and r["adapt_stopped_early"] in (False, None)
        assert r["adapt_best_step"] in ((None,) if r["size"] == 0 else (0, 3))
        if r["strategy"] == "scratch":
            assert r["pretrain"] is None and r["tune"] == "all"
        else:
            assert r["pretrain"]["steps"] == 4 and r["pretrain"]["budget"]["max_steps"] == 4
            assert len(r["pretrain"]["checkpoint_sha256"]) == 64
        # Re-scores exactly with plain sacrebleu from the committed hypothesis file.
        hyps = (results / r["hypotheses"]).read_text(encoding="utf-8").split("\n")[:-1]
        refs = (minipack / r["reference"]).read_text(encoding="utf-8").split("\n")[:20]
        assert round(BLEU().corpus_score(hyps, [refs]).score, 2) == r["bleu"]
        assert round(CHRF().corpus_score(hyps, [refs]).score, 2) == r["chrf"]
    # evaluation.rescore agrees, and catches a hypothesis file changed after the run.
    assert rescore_main([str(results), "--pack", str(minipack)]) == 0
    assert "12/12 rows re-score exactly" in capsys.readouterr().out
    tampered = tmp_path / "tampered"
    shutil.copytree(results, tampered)
    hyp = tampered / rows[0]["hypotheses"]
    hyp.write_text("".join(f"{line} extra words\n" for line in hyp.read_text(encoding="utf-8").split("\n")[:-1]), encoding="utf-8")
    n, mismatches, _ = rescore(tampered, minipack)
    assert n == 12 and {m["id"] for m in mismatches} == {rows[0]["id"]}
    assert rescore_main([str(tampered), "--pack", str(minipack)]) == 1
    assert f"MISMATCH {rows[0]['id']}" in capsys.readouterr().out
    tiers = {r["id"]: r["tiers"] for r in rows}
    cfg = C.load_compare_yaml(path)
    best = resolve_best(cfg, rows, "multitask")
    valid = {r["tune"]: r["valid_score"] for r in rows if r["strategy"] == "multitask" and r["size"] == 200 and r["seed"] == 1}
    assert best == max(valid, key=valid.get) and len(valid) == 2  # the better validation score, never the test
    assert tiers[f"multitask.ro.{best}.n200.d0.s1"] == ["options", "headline"]
    assert tiers["metanmt.ro." + resolve_best(C.load_compare_yaml(path), rows, "metanmt") + ".n0.d0.s1"] == ["curves"]

    # The summary's numbers are the rows' numbers.
    summary = (results / "summary.md").read_text(encoding="utf-8")
    head = markdown_table(summary, "### BLEU")
    sig = json.loads((results / "significance.json").read_text())["tests"]
    assert [(t["lang"], t["seed"]) for t in sig] == [("ro", 1), ("ro", 2)]
    for strategy in ("scratch", "multitask", "metanmt"):
        hrows = [r for r in rows if r["strategy"] == strategy and "headline" in r["tiers"]]
        assert sorted(r["seed"] for r in hrows) == [1, 2]
        expected = fmt([r["bleu"] for r in hrows])
        assert " ± " in expected and head[strategy][0].startswith(expected)
        mark = head[strategy][0][len(expected):]
        if strategy != "metanmt":
            assert mark == ""
        else:
            better = all(t["bleu"]["p_value"] < 0.05 and t["bleu"]["system"] > t["bleu"]["baseline"] for t in sig)
            worse = all(t["bleu"]["p_value"] < 0.05 and t["bleu"]["system"] < t["bleu"]["baseline"] for t in sig)
            assert mark == ("*" if better else "(-)" if worse else "")
    for t in sig:  # the bootstrap compares the rows' own scores
        base = next(r for r in rows if r["id"] == t["baseline"])
        system = next(r for r in rows if r["id"] == t["system"])
        assert (t["bleu"]["baseline"], t["bleu"]["system"]) == (base["bleu"], system["bleu"])
        assert (base["strategy"], system["strategy"]) == ("multitask", "metanmt")
    # The paper's claims, answered from the same rows (the rules: tests/test_claims.py).
    claims = markdown_table(summary, "## The paper's claims")
    assert [k.split(".")[0] for k in claims] == ["claim", "1", "2", "3", "4", "5"]
    above = all(t["bleu"]["p_value"] < 0.05 and t["bleu"]["system"] > t["bleu"]["baseline"] for t in sig)
    below = all(t["bleu"]["p_value"] < 0.05 and t["bleu"]["system"] < t["bleu"]["baseline"] for t in sig)
    assert claims[next(k for k in claims if k.startswith("1."))][0] == (
        "**holds**" if above else "**does not hold**" if below else "**cannot tell**")  # one target, both seeds tested
    assert claims[next(k for k in claims if k.startswith("4."))][0] == "**cannot tell**"  # no Korean target here
    assert json.loads((results / "significance.json").read_text())["ulr_tests"] == []  # no run without ULR here
    curves_section = summary.split("## curves")[1].split("\n## ")[0]
    assert curves_section.count("| multitask ro |") == 2  # once per metric table, though multitask is in several tiers
    curves = markdown_table(summary.split("## curves")[1], "### chrF")
    for r in rows:
        if "curves" in r["tiers"] and r["size"] == 100:
            assert curves[f"{r['strategy']} ro"][1] == fmt([r["chrf"]])
    for png in ("learning_curves.png", "headline_bars.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second run finishes nothing new; a lost last row (killed while
    # writing) re-runs that one cell only.
    before = (results / "results.jsonl").read_text(encoding="utf-8")
    assert main(["compare", str(path)]) == 0
    err = capsys.readouterr().err
    assert "12 finished" in err and "BLEU" not in err
    assert (results / "results.jsonl").read_text(encoding="utf-8") == before
    lines = before.splitlines()
    (results / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")
    assert main(["compare", str(path)]) == 0
    err = capsys.readouterr().err
    assert "11 finished" in err and err.count("BLEU") == 1 and "dropping a torn last line" in err
    again = load_rows(results / "results.jsonl")
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    assert again[-1]["bleu"] == rows[-1]["bleu"]  # the same cell, the same result

    # --report-only rebuilds the summary; --dry-run lists the plan.
    (results / "summary.md").unlink()
    assert main(["-q", "compare", str(path), "--report-only"]) == 0
    assert (results / "summary.md").read_text(encoding="utf-8") == summary
    # It reuses the bootstrap tests of significance.json (same rows, same hypothesis files) ...
    import evaluation.compare_report as report

    def no_bootstrap(*_a, **_k):
        raise AssertionError("bootstrap run again")
    monkeypatch.setattr(report, "paired_bootstrap", no_bootstrap)
    assert main(["-q", "compare", str(path), "--report-only"]) == 0
    assert (results / "summary.md").read_text(encoding="utf-8") == summary
    # ... and tests a pair again when a hypothesis file is not the one tested.
    hyp = results / sig[0]["system"].join(("hyps/", ".hyp"))
    saved = hyp.read_bytes()
    hyp.write_bytes(saved + b"x\n")
    with pytest.raises(AssertionError, match="bootstrap run again"):
        main(["-q", "compare", str(path), "--report-only"])
    hyp.write_bytes(saved)
    # ... or when the scores it tested are not the rows' scores any more (e.g. re-scored rows).
    stale = json.loads((results / "significance.json").read_text())
    stale["tests"][0]["bleu"]["system"] += 1.0
    (results / "significance.json").write_text(json.dumps(stale), encoding="utf-8")
    with pytest.raises(AssertionError, match="bootstrap run again"):
        main(["-q", "compare", str(path), "--report-only"])
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["recipe", "run", str(path), "--dry-run"]) == 0
    assert "done  scratch.ro.all.n200.d0.s1" in capsys.readouterr().err

    # Changing how a finished strategy was pre-trained is refused, not mixed in.
    changed = grid(tmp_path, minipack)
    changed["pretrain"]["metanmt"]["lr"] = 0.01
    write(tmp_path, changed)
    (results / "results.jsonl").write_text("\n".join(before.splitlines()[:-1]) + "\n", encoding="utf-8")
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pre-training 'metanmt'" in err and "other settings (lr)" in err


def snapshot_grid(tmp_path: Path, minipack: Path) -> dict:
    """Token budgets with snapshots: a budget tier (two snapshot points of the
    main runs) and an ablation tier at the first point, where an entry with
    that smaller budget meets the main runs' snapshots."""
    data = grid(tmp_path, minipack)
    data["train"].update({"max_steps": 0, "max_train_tokens": 2400, "snapshot_tokens": 800})
    data["pretrain"]["multitask-small"] = {"strategy": "multitask", "max_train_tokens": 800}
    data["pretrain"]["multitask-seed2"] = {"strategy": "multitask", "max_train_tokens": 800, "seed": 2}
    data["tiers"] = [
        {"name": "options", "strategies": ["multitask", "metanmt"], "tunes": ["all", "emb"], "sizes": [200]},
        {"name": "budget", "strategies": ["multitask", "metanmt"], "pretrain_tokens": [800, 1600], "sizes": [200]},
        {"name": "ablations", "strategies": ["multitask", "multitask-small", "multitask-seed2"], "pretrain_tokens": [800], "tunes": ["all"], "sizes": [200]},
    ]
    return data


def test_compare_snapshot_tiers(capsys, minipack: Path, tmp_path: Path) -> None:
    path = write(tmp_path, snapshot_grid(tmp_path, minipack))
    assert main(["-q", "compare", str(path)]) == 0
    results = tmp_path / "results"
    rows = {r["id"]: r for r in load_rows(results / "results.jsonl")}
    snap = {i: r for i, r in rows.items() if r["pretrain_tokens"]}
    best = {s: resolve_best(C.load_compare_yaml(path), list(rows.values()), s) for s in ("multitask", "metanmt")}
    expected = {f"{s}.ro.{best[s]}.n200.d0.s1.p{n}" for s in ("multitask", "metanmt") for n in ("800", "1600")}
    expected |= {"multitask.ro.all.n200.d0.s1.p800", "multitask-small.ro.all.n200.d0.s1.p800", "multitask-seed2.ro.all.n200.d0.s1.p800"}
    assert set(snap) == expected
    for r in snap.values():
        at = r["pretrain_snapshot"]["tokens"]
        assert r["pretrain_tokens"] <= at < r["pretrain_tokens"] + 800
        assert Path(r["pretrain_snapshot"]["path"]).name == f"tokens-{at:012d}.pt"
    # A snapshot is the model a run with that token budget ends with: the smaller-budget
    # entry's final snapshot is bit-identical to the main run's, and adapts identically.
    a, b = snap["multitask.ro.all.n200.d0.s1.p800"], snap["multitask-small.ro.all.n200.d0.s1.p800"]
    wa = read_checkpoint(a["pretrain_snapshot"]["path"])["model"]
    wb = read_checkpoint(b["pretrain_snapshot"]["path"])["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["pretrain_snapshot"]["tokens"] == b["pretrain_snapshot"]["tokens"]
    assert (a["bleu"], a["chrf"], a["valid_score"]) == (b["bleu"], b["chrf"], b["valid_score"])
    assert b["pretrain"]["tokens"] < a["pretrain"]["tokens"]
    summary = (results / "summary.md").read_text(encoding="utf-8")
    table = markdown_table(summary.split("## budget")[1], "### BLEU")
    assert table["multitask ro"][1] == fmt([snap[f"multitask.ro.{best['multitask']}.n200.d0.s1.p1600"]["bleu"]])
    assert "## ablations: every strategy at 800 target tokens" in summary
    # A second pre-training seed: how far the seed alone moves the score, beside the ablations.
    s1, s2 = snap["multitask.ro.all.n200.d0.s1.p800"]["bleu"], snap["multitask-seed2.ro.all.n200.d0.s1.p800"]["bleu"]
    assert (f"- Pre-training seed, multitask → multitask-seed2 (the same run with pre-training seed 2): BLEU ro {s2 - s1:+.2f}; "
            f"mean absolute difference {abs(s2 - s1):.2f} BLEU.") in summary
    assert summary.count("- Pre-training seed,") == 1  # one reference per seed run (not multitask-small too)
    assert snap["multitask-seed2.ro.all.n200.d0.s1.p800"]["pretrain"]["checkpoint_sha256"] != snap["multitask.ro.all.n200.d0.s1.p800"]["pretrain"]["checkpoint_sha256"]
    assert (results / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = sum(r["adapt_best_step"] == r["adapt_steps"] for r in rows.values())
    assert f"{len(rows)} adapted cells (step budget 3, " in summary
    assert f"in {last} the best checkpoint was the last one" in summary


def test_snapshot_tier_validation(tmp_path: Path, minipack: Path) -> None:
    bad = snapshot_grid(tmp_path, minipack)
    bad["tiers"][1]["pretrain_tokens"] = [1000]
    with pytest.raises(ConfigError, match="not a multiple of the snapshot_tokens of 'multitask'"):
        C.load_compare_yaml(write(tmp_path, bad))
    bad = snapshot_grid(tmp_path, minipack)
    bad["tiers"][2]["pretrain_tokens"] = [1600]
    with pytest.raises(ConfigError, match="beyond the budget of 'multitask-small'"):
        C.load_compare_yaml(write(tmp_path, bad))
    bad = snapshot_grid(tmp_path, minipack)
    bad["tiers"][0]["strategies"].append("multitask-small")  # its final model beside 2400-token ones
    with pytest.raises(ConfigError, match="same budget"):
        C.load_compare_yaml(write(tmp_path, bad))
    bad = snapshot_grid(tmp_path, minipack)
    bad["tiers"][1]["strategies"].append("scratch")
    with pytest.raises(ConfigError, match="scratch has none"):
        C.load_compare_yaml(write(tmp_path, bad))


def test_adapt_set_draws(prepared: Path, tmp_path: Path, minipack: Path) -> None:
    cfg = C.from_dict(C.CompareConfig, grid(tmp_path, minipack))
    full, info = adapt_set(cfg, str(prepared), "ro", 200, 0)
    assert len(full) == 200 and info["adapt_lines"] == "all"
    a, ia = adapt_set(cfg, str(prepared), "ro", 100, 1)
    b, ib = adapt_set(cfg, str(prepared), "ro", 100, 2)
    a2, _ = adapt_set(cfg, str(prepared), "ro", 100, 1)
    assert len(a) == 100 and a.src == a2.src and a.src != b.src  # seeded per draw, same for every strategy
    assert ia["adapt_lines"] == sorted(ia["adapt_lines"]) and a.src == [full.src[i] for i in ia["adapt_lines"]]
    with pytest.raises(DataError, match="fewer than the 400"):
        adapt_set(cfg, str(prepared), "ro", 400, 0)  # no adapt-extra for ro


def test_adapt_set_extra_drops_test_overlap(prepared: Path, tmp_path: Path, minipack: Path) -> None:
    import shutil

    data = tmp_path / "prep-copy"
    shutil.copytree(prepared, data)
    extra = data / "text" / "ro-en" / "adapt-extra"
    extra.mkdir()
    test_en = (data / "text" / "ro-en" / "test" / "newstest2016.en").read_text(encoding="utf-8").split("\n")
    (extra / "x.ro").write_text("a\nb\nc\n", encoding="utf-8")
    (extra / "x.en").write_text(f"first extra\n{test_en[0]}\nthird extra\n", encoding="utf-8")
    cfg = C.from_dict(C.CompareConfig, grid(tmp_path, minipack))
    text, info = adapt_set(cfg, str(data), "ro", 202, 0)
    assert text.tgt[200:] == ["first extra", "third extra"] and info["extra_dropped_overlap"] == 1
    with pytest.raises(DataError, match="only 202"):
        adapt_set(cfg, str(data), "ro", 203, 0)


def test_plan_order_and_validation(tmp_path: Path, minipack: Path) -> None:
    data = grid(tmp_path, minipack)
    data["tiers"][2].update({"draws": 3, "sizes": [0, 100, 200], "seeds": [1, 2]})
    cfg = C.load_compare_yaml(write(tmp_path, data))
    cells = [c for c, t in expand(cfg) if t == "curves"]
    # seeds outermost; 3 draws only below the full set; zero-shot and the full set once
    assert len(cells) == 2 * 2 * (1 + 3 + 1)
    assert [c.seed for c in cells] == [1] * 10 + [2] * 10
    assert [(c.size, c.draw) for c in cells[:5]] == [(0, 0), (100, 1), (100, 2), (100, 3), (200, 0)]
    scratch = [c for c, t in expand(cfg) if c.strategy == "scratch"]
    assert [(c.tune, c.seed) for c in scratch] == [("all", 1), ("all", 2)]

    bad = grid(tmp_path, minipack)
    bad["pretrain"]["metanmt"]["max_steps"] = 8
    with pytest.raises(ConfigError, match="same budget"):
        C.load_compare_yaml(write(tmp_path, bad))
    bad = grid(tmp_path, minipack)
    bad["tiers"][0]["strategies"] = ["multitask", "maml"]
    with pytest.raises(ConfigError, match="'maml' is not a `pretrain` entry"):
        C.load_compare_yaml(write(tmp_path, bad))
    bad = grid(tmp_path, minipack)
    bad["tiers"][1]["sizes"] = [0]
    with pytest.raises(ConfigError, match="scratch has none"):
        C.load_compare_yaml(write(tmp_path, bad))
    bad = grid(tmp_path, minipack)
    bad["tiers"] = bad["tiers"][1:]  # 'best' with no option runs before it
    with pytest.raises(ConfigError, match="asks for the best adaptation option"):
        from mtmeta.compare import Comparison

        Comparison(C.load_compare_yaml(write(tmp_path, bad)), log=lambda *_: None, progress=False).run()


def test_check_steps_starts_every_strategy(capsys, tmp_path: Path, minipack: Path) -> None:
    path = write(tmp_path, grid(tmp_path, minipack))
    assert main(["-q", "compare", str(path), "--check-steps", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["pretrain"]) == {"multitask", "metanmt"}
    assert all(p["steps"] == 2 and p["tokens"] > 0 for p in report["pretrain"].values())
    assert report["adapt"] == {"lang": "ro", "steps": 2, "tokens": report["adapt"]["tokens"]} and report["adapt"]["tokens"] > 0
    assert report["translate"]["sentences"] == 8
    assert not (tmp_path / "results" / "results.jsonl").exists()  # a check records no results


def test_ready_only_runs_beside_a_pretraining_still_going(capsys, minipack: Path, tmp_path: Path) -> None:
    """`--ready-only` starts no pre-training: with multitask's run still going
    (its snapshots there, no done.json) and metanmt not started, it runs the
    scratch cells and multitask's snapshot cells only; the full run later adds
    the rest and keeps those rows."""
    data = snapshot_grid(tmp_path, minipack)
    del data["pretrain"]["multitask-small"], data["pretrain"]["multitask-seed2"]
    data["tiers"] = [
        {"name": "options", "strategies": ["multitask", "metanmt"], "tunes": ["all", "emb"], "sizes": [200]},
        {"name": "budget", "strategies": ["multitask", "metanmt"], "pretrain_tokens": [800, 1600], "tunes": ["all"], "sizes": [200]},
        {"name": "headline", "strategies": ["scratch"], "sizes": [200]},
    ]
    path = write(tmp_path, data)
    assert main(["-q", "compare", str(path), "--pretrain-only", "multitask"]) == 0
    run = tmp_path / "work" / "pretrain" / "multitask"
    done = (run / "done.json").read_text(encoding="utf-8")
    (run / "done.json").unlink()  # as while the run still goes: settings.json and snapshots only
    capsys.readouterr()
    assert main(["compare", str(path), "--dry-run"]) == 0
    listed = capsys.readouterr().err
    assert "3 of the rest ready to run without pre-training" in listed
    assert "  ready  multitask.ro.all.n200.d0.s1.p800  [budget]" in listed
    assert "  todo  metanmt.ro.all.n200.d0.s1.p800  [budget]" in listed

    assert main(["-q", "compare", str(path), "--ready-only"]) == 0
    rows = {r["id"]: r for r in load_rows(tmp_path / "results" / "results.jsonl")}
    assert set(rows) == {"scratch.ro.all.n200.d0.s1", "multitask.ro.all.n200.d0.s1.p800", "multitask.ro.all.n200.d0.s1.p1600"}
    assert not (run / "done.json").exists() and not (tmp_path / "work" / "pretrain" / "metanmt").exists()
    early = rows["multitask.ro.all.n200.d0.s1.p800"]
    assert early["pretrain"] is None and early["pretrain_snapshot"]["tokens"] >= 800

    (run / "done.json").write_text(done, encoding="utf-8")  # the run has finished
    assert main(["-q", "compare", str(path)]) == 0
    after = {r["id"]: r for r in load_rows(tmp_path / "results" / "results.jsonl")}
    assert len(after) == 3 + 4 + 2 and after["multitask.ro.all.n200.d0.s1.p800"] == early
    assert (tmp_path / "work" / "pretrain" / "metanmt" / "done.json").is_file()


# ---------------------------------------------------------------- several processes, one grid


def scratch_grid(tmp_path: Path, minipack: Path, seeds: int) -> Path:
    data = grid(tmp_path, minipack)
    data["pretrain"] = {}
    data["tiers"] = [{"name": "headline", "strategies": ["scratch"], "sizes": [200], "seeds": list(range(1, seeds + 1))}]
    return write(tmp_path, data)


def test_grid_skips_a_cell_another_process_runs(capsys, minipack: Path, tmp_path: Path) -> None:
    """A cell whose folder another process holds is left to it: this process
    runs the rest, says what it left, and a later run finishes that cell."""
    from test_faults import hold_lock

    path = scratch_grid(tmp_path, minipack, seeds=3)
    held = "scratch.ro.all.n200.d0.s2"
    holder = hold_lock(tmp_path / "work" / "cells" / held)
    try:
        capsys.readouterr()
        assert main(["compare", str(path), "--dry-run"]) == 0
        assert f"  running (another process)  {held}" in capsys.readouterr().err
        assert main(["compare", str(path)]) == 0
        err = capsys.readouterr().err
        assert "1 cell(s) left run in other processes" in err
        rows = load_rows(tmp_path / "results" / "results.jsonl")
        assert sorted(r["id"] for r in rows) == ["scratch.ro.all.n200.d0.s1", "scratch.ro.all.n200.d0.s3"]
    finally:
        holder.stdin.close()
        holder.wait()
    assert main(["-q", "compare", str(path)]) == 0
    rows = load_rows(tmp_path / "results" / "results.jsonl")
    assert [r["id"] for r in rows][-1] == held and len(rows) == 3


def test_two_grid_processes_run_each_cell_once(minipack: Path, tmp_path: Path) -> None:
    """Two `mtmeta compare` processes started together on one recipe (one
    prepares, the other waits and reuses it) share the cells: every cell is
    one row, and together they finish the grid."""
    import subprocess
    import sys

    from test_faults import ENV, REPO

    path = scratch_grid(tmp_path, minipack, seeds=6)
    cmd = [sys.executable, "-m", "mtmeta.cli", "-q", "compare", str(path), "--threads", "1"]
    procs = [subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    ids = [r["id"] for r in load_rows(tmp_path / "results" / "results.jsonl")]
    assert len(ids) == len(set(ids)) == 6
    assert (tmp_path / "results" / "summary.md").is_file()


def test_row_records_the_best_checkpoints_validation_bleu(minipack: Path, tmp_path: Path) -> None:
    """valid_bleu (the budget plot's y) is the adapt-valid BLEU of the
    validation that picked best.pt, not of the last one."""
    data = yaml.safe_load(scratch_grid(tmp_path, minipack, seeds=1).read_text(encoding="utf-8"))
    data["adapt"].update({"bleu_sentences": 10, "select_metric": "chrf", "validate_every": 1, "max_steps": 3})
    path = write(tmp_path, data)
    assert main(["-q", "compare", str(path)]) == 0
    (row,) = load_rows(tmp_path / "results" / "results.jsonl")
    log = tmp_path / "work" / "cells" / row["id"] / "train_log.jsonl"
    vals = [json.loads(line)["validation"] for line in log.read_text(encoding="utf-8").splitlines() if '"validation"' in line]
    best = max(vals, key=lambda v: v["chrf"])  # the first of equals: the engine keeps a best only when strictly better
    assert row["valid_score"] == best["chrf"] and row["valid_bleu"] == best["bleu"]


def test_best_option_waits_for_every_option_cell(tmp_path: Path, minipack: Path) -> None:
    """With several processes, option cells finish out of order: two options
    of three must not decide 'best' (the third may be better)."""
    data = grid(tmp_path, minipack)
    data["tiers"][0]["tunes"] = ["all", "emb_enc", "emb"]
    cfg = C.load_compare_yaml(write(tmp_path, data))

    def row(tune: str, score: float) -> dict:
        return {"strategy": "multitask", "lang": "ro", "tune": tune, "size": 200, "draw": 0, "seed": 1, "valid_score": score}

    rows = [row("all", 30.0), row("emb_enc", 31.0)]
    assert resolve_best(cfg, rows, "multitask") is None
    assert resolve_best(cfg, rows + [row("emb", 32.0)], "multitask") == "emb"
    assert resolve_best(cfg, rows + [row("emb", 29.0)], "multitask") == "emb_enc"


def test_grid_leaves_cells_whose_pretraining_another_process_runs(capsys, minipack: Path, tmp_path: Path) -> None:
    """A pre-training folder another process holds (e.g. `--pretrain-only`)
    is not started a second time: its cells wait, the rest run."""
    from test_faults import hold_lock

    data = grid(tmp_path, minipack)
    data["pretrain"] = {"multitask": data["pretrain"]["multitask"]}
    data["tiers"] = [{"name": "headline", "strategies": ["scratch", "multitask"], "tunes": ["all"], "sizes": [200]}]
    path = write(tmp_path, data)
    holder = hold_lock(tmp_path / "work" / "pretrain" / "multitask")
    try:
        capsys.readouterr()
        assert main(["compare", str(path)]) == 0
        assert "1 cell(s) left run in other processes, or wait for a pre-training" in capsys.readouterr().err
        rows = load_rows(tmp_path / "results" / "results.jsonl")
        assert [r["id"] for r in rows] == ["scratch.ro.all.n200.d0.s1"]
        assert not (tmp_path / "work" / "pretrain" / "multitask" / "last.pt").exists()
    finally:
        holder.stdin.close()
        holder.wait()
    assert main(["-q", "compare", str(path)]) == 0
    assert len(load_rows(tmp_path / "results" / "results.jsonl")) == 2
