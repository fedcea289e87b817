"""The command line, through mtmeta.cli.main: each command on the minipack,
and bad input answered with exit code 2 and one line on stderr."""
from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from sacrebleu.metrics import BLEU, CHRF

from mtmeta.checkpoint import load_bundle
from mtmeta.cli import main

from conftest import ADAPT_VOCAB, MAX_TOKENS, SRC_VOCAB, TGT_VOCAB

RO_SENTENCES = ["Bună ziua.", "Mulțumesc foarte mult!", "", "Unde este gara?"]


def run_ok(capsys, *argv: str) -> str:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def run_error(capsys, *argv: str, expect: str | list[str]) -> str:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("mtmeta: error: "), err
    for word in [expect] if isinstance(expect, str) else expect:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def lines_of(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text.split("\n")[:-1]


# ---------------------------------------------------------------- commands


def test_prepare_command(capsys, minipack: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "prepared"
    argv = ["prepare", "--pack", str(minipack), "--output", str(out_dir),
            "--src-vocab-size", str(SRC_VOCAB), "--tgt-vocab-size", str(TGT_VOCAB)]
    summary = json.loads(run_ok(capsys, *argv))
    assert summary["train_langs"] == ["de", "es", "fr"]
    assert summary["target_langs"] == ["ro"]
    assert summary["totals"]["duplicate"] == 3
    assert summary["contamination"]["meta_train_en_lines_in_adapt_valid_test"] == 5
    assert (out_dir / "summary.json").is_file()
    on_disk = json.loads((out_dir / "summary.json").read_text())
    assert on_disk["totals"] == summary["totals"]
    assert on_disk["config"]["src_vocab_size"] == SRC_VOCAB
    # --train-langs narrows the languages.
    summary = json.loads(run_ok(capsys, *argv[:4], str(tmp_path / "fr"), "--train-langs", "fr", "--vocab-mode", "joint"))
    assert summary["train_langs"] == ["fr"]
    assert (tmp_path / "fr" / "vocab" / "src.model").is_file()


def test_train_command(capsys, prepared: Path, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "r.yaml", {"train": {"bleu_sentences": 2, "model": "tiny", "warmup_steps": 2, "log_every": 1}})
    out_dir = tmp_path / "run"
    result = json.loads(run_ok(
        capsys, "train", "--config", str(cfg), "--data", str(prepared), "--output", str(out_dir),
        "--max-steps", "3", "--max-tokens", str(MAX_TOKENS), "--validate-every", "2", "--langs", "de", "fr",
    ))
    assert result["step"] == 3 and result["tokens"] > 0
    assert Path(result["best"]).is_file() and Path(result["last"]).is_file()
    bundle, state = load_bundle(result["last"])
    assert bundle.languages() == ["de", "fr"]
    assert bundle.model.cfg.embed_dim == 32  # the tiny preset from the config file
    assert state["run_config"]["bleu_sentences"] == 2
    log = [json.loads(x) for x in (out_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["validation"]["step"] for r in log if "validation" in r] == [0, 2, 3]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    # Running again resumes: no more steps.
    again = json.loads(run_ok(
        capsys, "train", "--config", str(cfg), "--data", str(prepared), "--output", str(out_dir),
        "--max-steps", "3", "--max-tokens", str(MAX_TOKENS), "--langs", "de", "fr",
    ))
    assert again["step"] == 3 and again["tokens"] == result["tokens"]


def test_train_resume_with_other_languages_is_a_clean_error(capsys, prepared: Path, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "r.yaml", {"train": {"bleu_sentences": 0, "model": "tiny"}})
    common = ["train", "--config", str(cfg), "--data", str(prepared), "--output", str(tmp_path / "run"),
              "--max-tokens", str(MAX_TOKENS), "--validate-every", "0"]
    run_ok(capsys, *common, "--max-steps", "1", "--langs", "de", "fr")
    try:
        run_error(capsys, *common, "--max-steps", "2", expect="last.pt")
    except RuntimeError as e:  # what happens today
        raise AssertionError(f"traceback instead of a one-line error: {e}") from None


def test_adapt_command(capsys, prepared: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "a.yaml", {"adapt": {"bleu_sentences": 4, "src_vocab_size": ADAPT_VOCAB, "warmup_steps": 2}})
    out_dir = tmp_path / "adapt"
    result = json.loads(run_ok(
        capsys, "adapt", "--config", str(cfg), "--checkpoint", str(tiny_checkpoint), "--lang", "ro",
        "--data", str(prepared), "--output", str(out_dir), "--max-steps", "2", "--validate-every", "1",
        "--max-tokens", str(MAX_TOKENS), "--tune", "emb_enc",
    ))
    assert result["step"] == 2
    bundle, state = load_bundle(result["best"])
    assert bundle.languages() == ["de", "es", "fr", "ro"]
    assert state["run_config"]["tune"] == "emb_enc"
    assert len(bundle.src_vocab("ro")) <= ADAPT_VOCAB
    assert bundle.src_vocab("ro").decode(bundle.src_vocab("ro").encode("Bună ziua")) == "Bună ziua"


def test_adapt_command_with_own_files(capsys, tiny_checkpoint: Path, tmp_path: Path, minipack: Path) -> None:
    ro = minipack / "ro-en"
    out_dir = tmp_path / "adapt"
    result = json.loads(run_ok(
        capsys, "adapt", "--checkpoint", str(tiny_checkpoint), "--lang", "ro", "--output", str(out_dir),
        "--train-files", str(ro / "flores200-devtest-adapt800.ro"), str(ro / "flores200-devtest-adapt800.en"),
        "--valid-files", str(ro / "flores200-devtest-valid.ro"), str(ro / "flores200-devtest-valid.en"),
        "--max-steps", "1", "--validate-every", "0", "--max-tokens", str(MAX_TOKENS), "--data", str(tmp_path / "nowhere"),
    ))
    assert result["step"] == 1 and Path(result["last"]).is_file()


def test_translate_file_and_stdin(capsys, monkeypatch, adapted_checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.ro"
    src.write_text("\n".join(RO_SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.en"
    assert run_ok(capsys, "translate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro",
                  "--input", str(src), "--output", str(out), "--beam", "2") == ""
    from_file = lines_of(out)
    assert len(from_file) == len(RO_SENTENCES)
    assert not (tmp_path / "out.en.tmp").exists()

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(RO_SENTENCES) + "\n"))
    stdout = run_ok(capsys, "translate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro", "--beam", "2")
    assert stdout.endswith("\n") and stdout.split("\n")[:-1] == from_file

    # A language the pre-trained model knows works without adaptation; no trailing newline in the input.
    monkeypatch.setattr(sys, "stdin", io.StringIO("Guten Morgen.\nWie geht es dir?"))
    stdout = run_ok(capsys, "translate", "--checkpoint", str(adapted_checkpoint), "--lang", "de", "--beam", "1")
    assert len(stdout.split("\n")[:-1]) == 2


def test_evaluate_files_matches_sacrebleu(capsys, tmp_path: Path) -> None:
    refs = ["The cat sat on the mat.", "It is raining today.", "Where is the station?"]
    hyps = ["The cat sat on a mat.", "Today it rains.", "Where is the station?"]
    hyp, ref = tmp_path / "h.txt", tmp_path / "r.txt"
    hyp.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    ref.write_text("\n".join(refs) + "\n", encoding="utf-8")
    out_json = tmp_path / "scores.json"
    result = json.loads(run_ok(capsys, "evaluate", "--hyp", str(hyp), "--ref", str(ref), "--output", str(out_json)))
    bleu, chrf = BLEU(), CHRF()
    assert result["bleu"] == round(bleu.corpus_score(hyps, [refs]).score, 2)
    assert result["chrf"] == round(chrf.corpus_score(hyps, [refs]).score, 2)
    assert 0 < result["bleu"] < 100 and 0 < result["chrf"] < 100
    assert result["bleu_signature"] == str(bleu.get_signature())
    assert result["chrf_signature"] == str(chrf.get_signature())
    assert result["bleu_signature"].startswith("nrefs:1|") and "version:" in result["chrf_signature"]
    assert result["sentences"] == 3
    assert json.loads(out_json.read_text())["bleu"] == result["bleu"]
    # Perfect hypotheses score 100.
    assert json.loads(run_ok(capsys, "evaluate", "--hyp", str(ref), "--ref", str(ref)))["bleu"] == 100.0


def test_evaluate_checkpoint(capsys, prepared: Path, adapted_checkpoint: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "eval"
    result = json.loads(run_ok(
        capsys, "evaluate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro", "--data", str(prepared),
        "--output-dir", str(out_dir), "--beam", "1",
    ))
    assert result["test"] == "newstest2016" and result["sentences"] == 60
    hyp = Path(result["hypotheses"])
    assert hyp == out_dir / "ro-en.newstest2016.hyp"
    hyps = lines_of(hyp)
    assert len(hyps) == 60
    refs = lines_of(prepared / "text" / "ro-en" / "test" / "newstest2016.en")
    assert result["bleu"] == round(BLEU().corpus_score(hyps, [refs]).score, 2)
    assert result["chrf"] == round(CHRF().corpus_score(hyps, [refs]).score, 2)
    saved = json.loads((out_dir / "ro-en.newstest2016.json").read_text())
    assert saved["chrf"] == result["chrf"] and saved["bleu_signature"] == result["bleu_signature"]
    # --max-sentences limits the test set.
    result = json.loads(run_ok(
        capsys, "evaluate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro", "--data", str(prepared),
        "--output-dir", str(tmp_path / "eval5"), "--beam", "1", "--max-sentences", "5",
    ))
    assert result["sentences"] == 5 and len(lines_of(Path(result["hypotheses"]))) == 5


# ---------------------------------------------------------------- bad input


def test_adapt_mismatched_train_files(capsys, tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "a.ro").write_text("unu\ndoi\ntrei\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "v.ro").write_text("unu\n", encoding="utf-8")
    (tmp_path / "v.en").write_text("one\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    run_error(
        capsys, "adapt", "--checkpoint", str(tiny_checkpoint), "--lang", "ro", "--output", str(out_dir),
        "--train-files", str(tmp_path / "a.ro"), str(tmp_path / "a.en"),
        "--valid-files", str(tmp_path / "v.ro"), str(tmp_path / "v.en"), "--max-steps", "1",
        expect=["a.ro", "3 lines", "2"],
    )
    assert not (out_dir / "best.pt").exists() and not (out_dir / "last.pt").exists()


def test_translate_unknown_language(capsys, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.txt"
    (tmp_path / "in.txt").write_text("こんにちは\n", encoding="utf-8")
    run_error(capsys, "translate", "--checkpoint", str(tiny_checkpoint), "--lang", "ja",
              "--input", str(tmp_path / "in.txt"), "--output", str(out), expect="'ja'")
    assert not out.exists()
    run_error(capsys, "translate", "--checkpoint", str(tiny_checkpoint), "--lang", "Japanese", expect="--lang")


def test_translate_empty_input(capsys, monkeypatch, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.txt"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    run_error(capsys, "translate", "--checkpoint", str(tiny_checkpoint), "--lang", "de", "--output", str(out),
              expect="stdin")
    empty = tmp_path / "empty.de"
    empty.write_text("", encoding="utf-8")
    run_error(capsys, "translate", "--checkpoint", str(tiny_checkpoint), "--lang", "de", "--input", str(empty),
              "--output", str(out), expect="empty.de")
    assert not out.exists()


def test_translate_undecodable_input(capsys, tiny_checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "latin1.de"
    bad.write_bytes("Guten Tag\nSch\xf6n\n".encode("latin-1"))
    out = tmp_path / "o.txt"
    run_error(capsys, "translate", "--checkpoint", str(tiny_checkpoint), "--lang", "de", "--input", str(bad),
              "--output", str(out), expect=["latin1.de", "line 2", "UTF-8"])
    assert not out.exists()


def test_missing_and_truncated_checkpoint(capsys, tiny_checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    out = tmp_path / "o.txt"
    (tmp_path / "in.de").write_text("Hallo\n", encoding="utf-8")
    run_error(capsys, "translate", "--checkpoint", str(missing), "--lang", "de", "--input", str(tmp_path / "in.de"),
              "--output", str(out), expect=["nope.pt", "not found"])
    truncated = tmp_path / "half.pt"
    data = tiny_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    run_error(capsys, "translate", "--checkpoint", str(truncated), "--lang", "de", "--input", str(tmp_path / "in.de"),
              "--output", str(out), expect="half.pt")
    assert not out.exists()
    eval_dir = tmp_path / "eval"
    run_error(capsys, "evaluate", "--checkpoint", str(truncated), "--lang", "ro", "--data", str(prepared),
              "--output-dir", str(eval_dir), expect="half.pt")
    assert not list(eval_dir.glob("*.hyp")) and not list(eval_dir.glob("*.json"))
    adapt_dir = tmp_path / "adapt"
    run_error(capsys, "adapt", "--checkpoint", str(missing), "--lang", "ro", "--data", str(prepared),
              "--output", str(adapt_dir), expect="nope.pt")
    assert not (adapt_dir / "best.pt").exists()


def test_invalid_recipe_yaml(capsys, tmp_path: Path) -> None:
    unknown = write_yaml(tmp_path / "unknown.yaml", {"name": "x", "train": {"max_step": 5}})
    run_error(capsys, "recipe", "run", str(unknown), expect=["unknown.yaml", "max_step"])
    wrong = write_yaml(tmp_path / "wrong.yaml", {"name": "x", "train": {"max_steps": "five"}})
    run_error(capsys, "recipe", "run", str(wrong), expect=["wrong.yaml", "max_steps", "int"])
    wrong_list = write_yaml(tmp_path / "list.yaml", {"targets": "ro"})
    run_error(capsys, "recipe", "run", str(wrong_list), expect=["targets", "list"])
    preset = write_yaml(tmp_path / "preset.yaml", {"train": {"model": "huge", "max_steps": 1}})
    run_error(capsys, "recipe", "run", str(preset), expect=["huge"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {max_steps: [1\n", encoding="utf-8")
    run_error(capsys, "recipe", "run", str(broken), expect=["broken.yaml", "YAML"])
    run_error(capsys, "recipe", "run", str(tmp_path / "absent.yaml"), expect="absent.yaml")
    for name in ("unknown", "wrong", "list", "preset", "broken"):
        assert not (tmp_path / "work").exists(), name
    # A bad --config for a command is reported the same way.
    run_error(capsys, "train", "--config", str(unknown), "--output", str(tmp_path / "t"), expect="max_step")
    assert not (tmp_path / "t").exists()


def test_prepare_pack_missing_english_side(capsys, minipack: Path, tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    shutil.copytree(minipack, pack)
    (pack / "fr-en" / "tatoeba-v2021-08-07.en").unlink()
    out_dir = tmp_path / "prepared"
    run_error(capsys, "prepare", "--pack", str(pack), "--output", str(out_dir), expect="tatoeba-v2021-08-07.en")
    assert not out_dir.exists() and not (tmp_path / "prepared.partial").exists()
    # Without a manifest the missing side is reported too.
    (pack / "MANIFEST.tsv").unlink()
    run_error(capsys, "prepare", "--pack", str(pack), "--output", str(out_dir), expect="tatoeba-v2021-08-07.en")
    assert not out_dir.exists()


def test_evaluate_mismatched_hyp_ref(capsys, tmp_path: Path) -> None:
    (tmp_path / "h").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "r").write_text("a\n", encoding="utf-8")
    out = tmp_path / "s.json"
    run_error(capsys, "evaluate", "--hyp", str(tmp_path / "h"), "--ref", str(tmp_path / "r"), "--output", str(out),
              expect=["2 lines", "1"])
    assert not out.exists()
    run_error(capsys, "evaluate", "--hyp", str(tmp_path / "h"), expect="--ref")


def test_long_commands_load_all_code_at_start() -> None:
    """A run of hours must not import project code later (a checkout edited
    meanwhile would mix two versions): every module is loaded up front."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    names = sorted(
        ".".join(p.relative_to(repo).with_suffix("").parts).removesuffix(".__init__")
        for pkg in ("data_prep", "mtmeta", "evaluation") for p in (repo / pkg).rglob("*.py")
    )
    code = ("import sys; from mtmeta import cli; cli.load_all_code(); "
            f"missing = [n for n in {names!r} if n not in sys.modules]; print(missing)")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    from mtmeta import cli

    assert {cli.cmd_compare, cli.cmd_train, cli.cmd_adapt, cli.cmd_recipe} <= cli.LONG_COMMANDS
