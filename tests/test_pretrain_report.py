"""evaluation/pretrain_report.py: the curves from a log that was interrupted,
resumed and torn, and the per-source-language table of a tiny checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU, CHRF

from evaluation import pretrain_report as R
from mtmeta.errors import DataError
from mtmeta.scoring import longest_repeat, repetition


def _val(step, tokens, nll, bleu, improved):
    return {"validation": {"step": step, "tokens": tokens, "minutes": step / 10, "valid_nll": nll, "valid_ppl": 1.0,
                           "bleu": bleu, "chrf": 2 * bleu, "score": -nll}, "improved": improved}


def _train(step, tokens, loss):
    return {"step": step, "tokens": tokens, "loss": loss, "tok_s": 1000, "lr": 1e-4}


def _seg(step, tokens, resumed, threads=1):
    return {"segment": {"step": step, "tokens": tokens, "resumed": resumed, "hardware": f"cpu ({threads} thread)", "time": "t"}}


def write_log(path: Path) -> None:
    """A log written by code from before the engine repaired its log on resume:
    a run killed after step 40 resumed from last.pt at step 20 and wrote
    steps 30 and 40 again; one garbled line in the middle, a torn last line."""
    lines = [json.dumps(r) for r in (
        _val(0, 0, 10.0, 0.0, True), _seg(0, 0, False),
        _train(10, 1000, 8.0), _train(20, 2000, 7.0), _val(20, 2000, 6.0, 1.0, True),
        _train(30, 3000, 6.5), _train(40, 4000, 6.4), _val(40, 4000, 5.9, 1.5, True),  # superseded by the resume
    )]
    lines.append('{"step": 41, "tokens": 41')  # garbled (a full disk, then appended onto)
    lines += [json.dumps(r) for r in (
        _seg(20, 2000, True, threads=2),
        _train(30, 3000, 6.0), _train(40, 4000, 5.5), _val(40, 4000, 5.0, 2.5, True),
        _train(50, 5000, 5.2), _val(60, 6000, 5.1, 2.4, False),
    )]
    path.write_text("\n".join(lines) + '\n{"step": 70, "tok', encoding="utf-8")  # torn: killed mid-append


def test_log_reads_as_one_run(tmp_path):
    log = tmp_path / "train_log.jsonl"
    write_log(log)
    run = R.read_run_log(log, "multitask")
    assert [(v["step"], v["valid_nll"]) for v in run.validations] == [(0, 10.0), (20, 6.0), (40, 5.0), (60, 5.1)]
    assert [(r["step"], r["loss"]) for r in run.train] == [(10, 8.0), (20, 7.0), (30, 6.0), (40, 5.5), (50, 5.2)]
    assert [(s["step"], s["resumed"]) for s in run.segments] == [(0, False), (20, True)]
    best = run.best()
    assert (best["step"], best["valid_nll"]) == (40, 5.0)  # the best after the resume, not the superseded 5.9
    assert run.last()["step"] == 60
    notes = " ".join(run.notes)
    assert "skipped 2 line(s)" in notes and "line 9, 16" in notes  # the garbled and the torn line
    assert "dropped 3 record(s)" in notes  # steps 30, 40 and the validation at 40 of the killed segment


def test_progress_rows_are_the_logs_validations(tmp_path, capsys):
    log = tmp_path / "train_log.jsonl"
    write_log(log)
    # The resumed segment's validation at 40 (not the superseded one), the best marked.
    assert R.progress_rows(log, after=20) == ["| | 40 (best so far) | 0.0M | 5.000 | 2.50 | 5.0 |", "| | 60 | 0.0M | 5.100 | 2.40 | 4.8 |"]
    assert R.main(["progress", str(log)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "| | 20 | 0.0M | 6.000 | 1.00 | 2.0 |"


def test_curves_figure_and_skipped_runs(tmp_path):
    log = tmp_path / "multitask.jsonl"
    write_log(log)
    empty = tmp_path / "metanmt.jsonl"
    empty.write_text("", encoding="utf-8")
    out = tmp_path / "curves.png"
    notes = []
    result = R.write_curves(None, [f"multitask={log}", f"metanmt={empty}", f"transfer={tmp_path / 'missing.jsonl'}"], out,
                            tmp_path, log=notes.append)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert set(result["runs"]) == {"multitask"}
    s = result["runs"]["multitask"]
    assert (s["best"]["step"], s["best"]["valid_nll"], s["best"]["bleu"]) == (40, 5.0, 2.5)
    assert [r["step"] for r in s["resumes"]] == [20] and "2 thread" in s["resumes"][0]["hardware"]
    assert any(n.startswith("metanmt: skipped") for n in result["notes"])
    assert any(n.startswith("transfer: skipped") and "no log" in n for n in result["notes"])
    with pytest.raises(DataError):
        R.write_curves(None, [f"metanmt={empty}"], tmp_path / "none.png", tmp_path, log=notes.append)
    assert not (tmp_path / "none.png").exists()


def test_curves_from_the_recipe_fall_back_to_the_committed_copy(tmp_path, monkeypatch):
    """The recipe's runs: the work folder's log, else RESULTS/NAME_train_log.jsonl (a clean checkout)."""
    monkeypatch.chdir(tmp_path)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "compare.yaml"
    results = tmp_path / "results"
    results.mkdir()
    write_log(results / "multitask_train_log.jsonl")
    result = R.write_curves(str(recipe), None, tmp_path / "c.png", results, log=lambda *_: None)
    assert set(result["runs"]) == {"multitask"}
    assert result["runs"]["multitask"]["budget_tokens"] == 90_000_000
    assert any("committed copy" in n for n in result["notes"])


def test_repetition():
    assert longest_repeat("The the the the end") == 4  # case-insensitive
    assert longest_repeat("of the world of the world of the world") == 1  # a word, not a phrase
    assert longest_repeat("no no, no no") == 2
    assert longest_repeat("") == 0
    r = repetition(["a a a a", "b b b", "x y x y", "go go go go go"])
    assert (r["repeat_lines"], r["repeat_pct"], r["repeat_run"]) == (2, 50.0, 4)


def test_per_language_tiny(tmp_path, prepared, tiny_checkpoint, minipack):
    """Every source language of the tiny model, greedy: references are the
    pack's cleaned lines that encode to the stored ids, the scores are plain
    sacreBLEU on the written files, and the pooled NLL is the engine's
    validation of all languages at once (eval mode: deterministic)."""
    import torch

    from data_prep.cleaning import normalize
    from data_prep.sources import load_pack
    from mtmeta.checkpoint import load_bundle
    from mtmeta.data import PairData
    from mtmeta.validation import Validator

    hyp_dir = tmp_path / "hyps"
    result = R.per_language(tiny_checkpoint, prepared, minipack, beams=(1,), threads=1, hyp_dir=hyp_dir, log=lambda *_: None)
    langs = result["languages"]
    assert sorted(langs) == ["de", "es", "fr"]
    assert result["checkpoint"]["update"] == 12 and len(result["checkpoint"]["sha256"]) == 64
    bundle, _ = load_bundle(tiny_checkpoint)
    bundle.model.eval()
    pack_en = {normalize(t) for text in load_pack(minipack, roles=["meta-train"]) for t in text.tgt}
    for lang in langs:
        refs = (hyp_dir / "beam1" / f"{lang}.ref.en").read_text(encoding="utf-8").splitlines()
        hyps = (hyp_dir / "beam1" / f"{lang}.hyp.en").read_text(encoding="utf-8").splitlines()
        pairs = PairData.load(Path(prepared) / "data" / f"{lang}-en" / "valid.npz")
        info = result["references"][lang]
        assert (info["from_pack"], info["pairs"], info["origins"]) == (len(pairs), len(pairs), {"tatoeba": len(pairs)})
        assert info["words_per_line"] == pytest.approx(sum(len(r.split()) for r in refs) / len(refs), abs=0.05)
        assert all(r in pack_en for r in refs)
        assert [bundle.tgt_vocab.encode(r) for r in refs] == [t.tolist() for t in pairs.tgt]
        s = result["decoding"]["beam1"]["scores"][lang]
        assert s["bleu"] == round(BLEU().corpus_score(hyps, [refs]).score, 2)
        assert s["chrf"] == round(CHRF().corpus_score(hyps, [refs]).score, 2)
        assert s["repeat_pct"] == repetition(hyps)["repeat_pct"]
    sets = {lang: PairData.load(Path(prepared) / "data" / f"{lang}-en" / "valid.npz") for lang in langs}
    with torch.no_grad():
        pooled = Validator(sets, 0).evaluate(bundle)["valid_nll"]
    assert result["nll"]["all"] == pytest.approx(pooled, rel=1e-6)  # float32 sums in another order; dropout would be ~1e-2
    # a held-out reference counts as trained when its ids are some training pair's target
    targets = {lg: {y.tobytes() for y in PairData.load(Path(prepared) / "data" / f"{lg}-en" / "train.npz").tgt} for lg in langs}
    for lang in langs:
        expect = {}
        for y in sets[lang].tgt:
            others = {lg for lg in langs if y.tobytes() in targets[lg]} - {lang}
            key = "of another language" if others else ("of its own language (another source)" if y.tobytes() in targets[lang] else "no")
            expect[key] = expect.get(key, 0) + 1
        assert result["references"][lang]["reference_is_a_training_target"] == expect
    groups = result["decoding"]["beam1"]["groups"]
    assert groups["from tatoeba"]["sentences"] == sum(len(s) for s in sets.values())
    assert groups["from tatoeba"]["nll"] == pytest.approx(pooled, rel=1e-6)

    # Scoring again from the written hypotheses gives the same numbers; other sources are refused.
    again = R.per_language(tiny_checkpoint, prepared, minipack, beams=(1,), threads=1, hyp_dir=hyp_dir, reuse_hyps=True, log=lambda *_: None)
    assert again["decoding"]["beam1"]["scores"] == result["decoding"]["beam1"]["scores"]
    src = hyp_dir / "beam1" / f"{langs[0]}.src"
    src.write_text("x\n" + src.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(DataError, match="other sources"):
        R.per_language(tiny_checkpoint, prepared, minipack, beams=(1,), threads=1, hyp_dir=hyp_dir, reuse_hyps=True, log=lambda *_: None)

    md = R.per_language_markdown(result, "tiny", "python -m evaluation.pretrain_report per-language ...", "a label")
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in md and "nc:6|nw:0" in md
    assert "update 12" in md and "a label" in md
    table = md.split("| lang |")[1].split("\n\n")[0]
    assert table.count("\n| ") == len(langs) + 1  # one row per language, all
    assert "| from tatoeba |" in md


def test_per_language_refuses_another_folders_vocabulary(tmp_path, prepared, tiny_checkpoint):
    """Stored ids mean the checkpoint's pieces only with the same vocabularies."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    de, fr = other / "vocab" / "de.model", other / "vocab" / "fr.model"
    de.write_bytes(fr.read_bytes())
    with pytest.raises(DataError, match="de vocabulary"):
        R.per_language(tiny_checkpoint, other, None, beams=(1,), threads=1, log=lambda *_: None)
