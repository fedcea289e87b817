"""Fast, visible decoding: the CTranslate2 export decodes exactly as the
native engine does (greedy, fp32), both engines bound the output length by
the input's, long inputs are cut with a warning, progress shows on stderr,
and `--engine ctranslate2` on anything but an export is one clear error."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.prepare import read_protected
from data_prep.vocab import EOS, N_SPECIAL
from mtmeta import decoding
from mtmeta.checkpoint import Bundle, load_bundle, save_checkpoint
from mtmeta.cli import main
from mtmeta.decoding import Progress, generate_ids, max_output_len

ct2 = pytest.importorskip("ctranslate2")

from mtmeta.export import export_ctranslate2, open_export  # noqa: E402
from mtmeta.safe_io import sha256_file  # noqa: E402


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str, *words: str) -> str:
    assert code == 2, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("mtmeta: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_sentences(prepared: Path, n: int = 8) -> list[str]:
    # Short ones: the tiny model's outputs run to the length bound, and the
    # test should take seconds.
    src = read_protected(prepared, "ro", "test").src
    return sorted(src, key=len)[:n]


test_sentences.__test__ = False  # a helper, not a test


def native_greedy(checkpoint: Path, lang: str, sentences: list[str]) -> list[list[int]]:
    bundle, _ = load_bundle(checkpoint)
    bundle.model.fold_embeddings()
    ids = bundle.src_vocab(lang).encode_batch(sentences)
    return generate_ids(bundle, lang, ids, beam=1, batch_sentences=3)


def ct2_greedy(export_dir: Path, lang: str, sentences: list[str]) -> list[list[int]]:
    model = open_export(export_dir, compute_type="float32", device="cpu", threads=1)
    ids = model.src_vocab(lang).encode_batch(sentences)
    return model.generate_ids(lang, ids, beam=1, batch_sentences=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, adapted_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("export") / "ct2"
    export_ctranslate2(adapted_checkpoint, out)
    return out


@pytest.fixture(scope="module")
def ulr_checkpoint(tmp_path_factory, adapted_checkpoint: Path) -> Path:
    """The adapted model's vocabularies and layers under a ULR source
    embedding with random fixed vectors and non-zero language deltas (a
    checkpoint as training with embedding: ulr writes one)."""
    from mtmeta.model import build_model

    bundle, _ = load_bundle(adapted_checkpoint)
    g = np.random.default_rng(0)
    q, k = 8, 20
    langs = bundle.languages()
    ulr = {
        "en_vectors": g.standard_normal((len(bundle.tgt_vocab), q)).astype(np.float32),
        "key_ids": np.arange(N_SPECIAL, N_SPECIAL + k),
        "queries": {lang: g.standard_normal((len(bundle.src_vocab(lang)), q)).astype(np.float32) for lang in langs},
    }
    cfg = dataclasses.replace(bundle.model.cfg, embedding="ulr")
    torch.manual_seed(0)
    model = build_model(cfg, len(bundle.tgt_vocab), {lang: len(bundle.src_vocab(lang)) for lang in langs}, ulr=ulr)
    rest = {n: p for n, p in bundle.model.state_dict().items() if not n.startswith("encoder.embed_tokens.")}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    assert not unexpected and all(n.startswith("encoder.embed_tokens.") for n in missing)
    with torch.no_grad():
        for t in model.src_embed.delta.tables.values():
            t.weight.normal_(0, 0.1)
        model.src_embed.values.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("ulr") / "ulr.pt"
    save_checkpoint(path, Bundle(model, bundle.tgt_vocab, dict(bundle.src_vocabs)))
    return path


@pytest.fixture(scope="module")
def degenerate_checkpoint(tmp_path_factory, tiny_checkpoint: Path) -> Path:
    """A model that never ends a sentence: the decoder's final layer norm
    outputs one constant vector whose best token is always the same piece,
    and EOS scores far below it."""
    bundle, _ = load_bundle(tiny_checkpoint)
    dec = bundle.model.decoder
    with torch.no_grad():
        emb = dec.embed_tokens.weight  # tied with the output projection
        k = N_SPECIAL + 7
        emb[EOS] = -emb[k]
        dec.layer_norm.weight.zero_()
        dec.layer_norm.bias.copy_(50 * emb[k])
    path = tmp_path_factory.mktemp("degenerate") / "degenerate.pt"
    save_checkpoint(path, bundle)
    return path


# ---------------------------------------------------------------- export round trip


def test_export_folder(exported: Path, adapted_checkpoint: Path) -> None:
    meta = json.loads((exported / "mtmeta_export.json").read_text())
    bundle, _ = load_bundle(adapted_checkpoint)
    assert meta["source_checkpoint"]["sha256"] == sha256_file(adapted_checkpoint)
    assert set(meta["languages"]) == set(bundle.languages())
    for lang, info in meta["languages"].items():
        assert info["offset"] == bundle.src_offset(lang)
        assert (exported / info["vocab"]).read_bytes() == bundle.src_vocab(lang).proto
    assert (exported / "en.model").read_bytes() == bundle.tgt_vocab.proto
    assert (exported / "model.bin").is_file() and (exported / "config.json").is_file()
    config = json.loads((exported / "config.json").read_text())
    assert config["decoder_start_token"] == "</s>" and config["add_source_eos"] is True


def test_ct2_greedy_equals_native_tables(exported: Path, adapted_checkpoint: Path, prepared: Path) -> None:
    ro = test_sentences(prepared)
    de = ["Guten Morgen.", "Wie geht es dir?", "Das ist ein Test."]
    for lang, sentences in (("ro", ro), ("de", de)):
        native = native_greedy(adapted_checkpoint, lang, sentences)
        assert ct2_greedy(exported, lang, sentences) == native, lang
        assert all(native)  # something to compare


def test_ct2_greedy_equals_native_ulr(ulr_checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "ct2-ulr"
    export_ctranslate2(ulr_checkpoint, out)
    meta = json.loads((out / "mtmeta_export.json").read_text())
    assert meta["embedding"].startswith("ulr")
    sentences = test_sentences(prepared, 6)
    assert ct2_greedy(out, "ro", sentences) == native_greedy(ulr_checkpoint, "ro", sentences)


def test_cli_export_translate_evaluate(capsys, adapted_checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, stdout, err = run_cli(capsys, "-q", "export", "--checkpoint", str(adapted_checkpoint), "--format", "ctranslate2",
                                "--output", str(out), "--quantization", "float32")
    assert code == 0, err
    assert json.loads(stdout)["source_checkpoint"]["sha256"] == sha256_file(adapted_checkpoint)
    # Exporting again needs --force; a folder that is not an export is never replaced.
    one_error_line(*run_cli(capsys, "-q", "export", "--checkpoint", str(adapted_checkpoint), "--output", str(out))[::2], "--force")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    one_error_line(*run_cli(capsys, "-q", "export", "--checkpoint", str(adapted_checkpoint), "--output", str(other), "--force")[::2], "not an mtmeta export")
    assert (other / "notes.txt").read_text() == "mine"
    code, _, err = run_cli(capsys, "-q", "export", "--checkpoint", str(adapted_checkpoint), "--output", str(out), "--force")
    assert code == 0, err

    src = tmp_path / "in.ro"
    src.write_text("\n".join(test_sentences(prepared, 5)) + "\n", encoding="utf-8")
    code, native, err = run_cli(capsys, "-q", "translate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro", "--input", str(src), "--beam", "1")
    assert code == 0, err
    code, fast, err = run_cli(capsys, "-q", "translate", "--engine", "ctranslate2", "--model", str(out), "--compute-type", "float32",
                              "--lang", "ro", "--input", str(src), "--beam", "1")
    assert code == 0, err
    assert fast == native and len(fast.split("\n")) == 6

    results = {}
    for engine, flags in (("native", ["--checkpoint", str(adapted_checkpoint)]), ("ctranslate2", ["--engine", "ctranslate2", "--model", str(out)])):
        code, stdout, err = run_cli(capsys, "-q", "evaluate", *flags, "--lang", "ro", "--data", str(prepared), "--output-dir",
                                    str(tmp_path / f"eval-{engine}"), "--beam", "1", "--max-sentences", "6", "--batch-size", "3")
        assert code == 0, err
        results[engine] = json.loads(stdout)
    assert results["ctranslate2"]["engine"] == "ctranslate2" and results["native"]["engine"] == "native"
    assert Path(results["ctranslate2"]["hypotheses"]).read_text() == Path(results["native"]["hypotheses"]).read_text()
    assert results["ctranslate2"]["bleu"] == results["native"]["bleu"]


def test_ctranslate2_engine_on_non_export_is_one_error(capsys, adapted_checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.bin").write_bytes(b"x")
    src = tmp_path / "in.ro"
    src.write_text("Bună ziua.\n", encoding="utf-8")
    for flags in (["--model", str(adapted_checkpoint)], ["--checkpoint", str(adapted_checkpoint)], ["--model", str(plain)], ["--model", str(tmp_path / "absent")]):
        code, out, err = run_cli(capsys, "translate", "--engine", "ctranslate2", *flags, "--lang", "ro", "--input", str(src))
        one_error_line(code, err, Path(flags[1]).name)
        assert out == ""
        code, out, err = run_cli(capsys, "evaluate", "--engine", "ctranslate2", *flags, "--lang", "ro", "--data", str(prepared),
                                 "--output-dir", str(tmp_path / "eval"))
        one_error_line(code, err, Path(flags[1]).name)
    one_error_line(*run_cli(capsys, "translate", "--engine", "ctranslate2", "--lang", "ro", "--input", str(src))[::2], "--model")
    one_error_line(*run_cli(capsys, "translate", "--checkpoint", str(adapted_checkpoint), "--compute-type", "int8", "--lang", "ro")[::2], "--compute-type")


def test_unsupported_compute_type_is_one_error(capsys, exported: Path, tmp_path: Path) -> None:
    missing = [t for t in ("int16", "bfloat16", "int8", "float32") if t not in ct2.get_supported_compute_types("cuda" if ct2.get_cuda_device_count() else "cpu")]
    if not missing:
        pytest.skip("this machine runs every compute type")
    src = tmp_path / "in.ro"
    src.write_text("Bună ziua.\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "translate", "--engine", "ctranslate2", "--model", str(exported), "--compute-type", missing[0],
                             "--lang", "ro", "--input", str(src))
    one_error_line(code, err, missing[0], "supported here")


# ---------------------------------------------------------------- length bound, long inputs


def test_length_bound_holds_for_a_degenerate_model(degenerate_checkpoint: Path, prepared: Path, tmp_path: Path, capsys) -> None:
    bundle, _ = load_bundle(degenerate_checkpoint)
    vocab = bundle.src_vocab("de")
    sentences = ["Hallo.", "Guten Morgen, wie geht es dir heute?", "Ja", "Das ist ein etwas längerer Satz mit vielen Wörtern darin."]
    ids = vocab.encode_batch(sentences)
    max_positions = bundle.model.cfg.max_positions
    bounds = [max_output_len(len(s), max_positions) for s in ids]
    assert bounds == [min(int(1.5 * len(s) + 10), max_positions - 2) for s in ids]
    for beam in (1, 3):
        out = generate_ids(bundle, "de", ids, beam=beam, batch_sentences=4)  # one batch: short ones must still stop early
        assert [len(o) for o in out] == bounds, beam
    export = tmp_path / "degenerate-ct2"
    export_ctranslate2(degenerate_checkpoint, export)
    model = open_export(export, compute_type="float32", device="cpu", threads=1)
    assert [len(o) for o in model.generate_ids("de", ids, beam=1, batch_sentences=4)] == bounds

    # A 5,000-word line is cut to what the encoder reads, with one warning; its output stays under the hard cap.
    capsys.readouterr()
    long_ids = vocab.encode_batch([" ".join(["Haus"] * 5000), "Hallo."])
    out = generate_ids(bundle, "de", long_ids, beam=1, progress=True)
    err = capsys.readouterr().err
    assert err.count("mtmeta: warning:") == 1 and "1 of 2" in err and f"cut to {max_positions - 1}" in err
    assert len(out[0]) == max_positions - 2 and len(out[1]) == bounds[0]
    assert model.generate_ids("de", long_ids, beam=1, progress=True) == out
    assert capsys.readouterr().err.count("mtmeta: warning:") == 1
    # Quiet (--quiet, progress False): no warning.
    generate_ids(bundle, "de", long_ids, beam=1, progress=False)
    assert capsys.readouterr().err == ""


def test_batches_are_sorted_by_length() -> None:
    ids = [[1] * n for n in (5, 1, 9, 3, 0, 3, 7)]
    batches = decoding.length_batches(ids, 2)
    assert batches == [[1, 3], [5, 0], [6, 2]]  # the empty input (4) is not decoded
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 5, 6]


def test_empty_lines_translate_to_empty_lines(exported: Path, adapted_checkpoint: Path) -> None:
    sentences = ["Bună ziua.", "", "Unde este gara?"]
    bundle, _ = load_bundle(adapted_checkpoint)
    native = decoding.translate(bundle, "ro", sentences, beam=2)
    fast = open_export(exported, compute_type="float32", threads=1).translate("ro", sentences, beam=2)
    assert native[1] == fast[1] == "" and native[0] and native[2]
    assert fast == native


# ---------------------------------------------------------------- progress


def test_progress_lines_when_stderr_is_not_a_tty(capsys, adapted_checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.ro"
    src.write_text("\n".join(test_sentences(prepared, 10)) + "\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "translate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro", "--input", str(src),
                           "--beam", "1", "--batch-size", "2")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("translate ro: ")]
    assert len(lines) >= 5, err  # one per batch of 2 (each is 20% of 10)
    assert lines[-1].startswith("translate ro: 10/10 sentences (100%)") and "sentences/s" in lines[-1]
    # --quiet: nothing.
    code, _, err = run_cli(capsys, "-q", "translate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro", "--input", str(src), "--beam", "1")
    assert code == 0 and err == ""


def test_progress_long_mode_is_quiet_for_short_decodes(capsys, monkeypatch) -> None:
    with Progress(100, "valid", "long") as bar:
        for _ in range(10):
            bar.update(10)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(decoding, "LONG_DECODE_SECONDS", 0.0)
    with Progress(100, "valid", "long") as bar:
        bar.update(50)
        bar.update(50)
    err = capsys.readouterr().err
    assert "valid: 50/100" in err and "valid: 100/100" in err
    with Progress(100, "off", False) as bar:
        bar.update(100)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_native_bf16_and_ct2(adapted_checkpoint: Path, exported: Path, prepared: Path) -> None:
    from mtmeta.hardware import setup

    sentences = test_sentences(prepared)
    bundle, _ = load_bundle(adapted_checkpoint)
    bundle.model.fold_embeddings()
    ids = bundle.src_vocab("ro").encode_batch(sentences)
    bounds = [max_output_len(len(s), bundle.model.cfg.max_positions) for s in ids]
    # GPU kernels may break near-ties differently from the CPU: check the
    # runs complete and respect the bounds, not token equality.
    for precision, beam in (("fp32", 1), ("bf16", 2)):
        out = generate_ids(bundle, "ro", ids, beam=beam, hw=setup("cuda", precision, torch.get_num_threads()))
        assert len(out) == len(ids) and all(0 < len(o) <= b for o, b in zip(out, bounds)), precision
    assert next(bundle.model.parameters()).device.type == "cuda"
    if ct2.get_cuda_device_count():
        model = open_export(exported, compute_type="float32", device="cuda")
        out = model.generate_ids("ro", model.src_vocab("ro").encode_batch(sentences), beam=1)
        assert all(0 < len(o) <= b for o, b in zip(out, bounds))
