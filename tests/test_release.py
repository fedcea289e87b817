"""Released models (mtmeta/release.py, `mtmeta export --format release`):
weights only, checksummed, read as they are by adapt, translate, evaluate
and the CTranslate2 export; a damaged release is one line naming the file.

The model is the session's tiny checkpoint under a ULR source embedding
(random fixed vectors, non-zero language deltas), so a release carries the
English vectors and queries a new language is aligned with. The target
language's sets are read straight from the minipack (no prepared folder)."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_prep.prepare import read_protected
from data_prep.vocab import N_SPECIAL
from mtmeta.checkpoint import Bundle, load_bundle, read_checkpoint, save_checkpoint
from mtmeta.cli import main
from mtmeta.data import PairData
from mtmeta.decoding import generate_ids
from mtmeta.export import export_release
from mtmeta.release import CARD, MANIFEST, fill_card_scores, read_manifest, read_release, sha256_file

from conftest import ADAPT_VOCAB, MAX_TOKENS


def run_ok(capsys, *argv: str) -> str:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def run_error(capsys, *argv: str, expect: list[str]) -> str:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("mtmeta: error: "), err
    for word in expect:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def ulr_checkpoint(tmp_path_factory, tiny_checkpoint: Path) -> Path:
    """The tiny model with a ULR source embedding, saved with its training
    state (optimizer and all, as training writes checkpoints)."""
    from mtmeta.model import build_model

    bundle, state = load_bundle(tiny_checkpoint)
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
    model.load_state_dict(rest, strict=False)
    with torch.no_grad():
        for t in model.src_embed.delta.tables.values():
            t.weight.normal_(0, 0.1)
        model.src_embed.values.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("ulr") / "ulr.pt"
    extra = {k: state[k] for k in ("run_config", "history", "train_state") if k in state}
    save_checkpoint(path, Bundle(model, bundle.tgt_vocab, dict(bundle.src_vocabs)), **extra)
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory, ulr_checkpoint: Path) -> Path:
    """The default release (float16), made through the command line."""
    out = tmp_path_factory.mktemp("rel") / "tiny-ulr"
    main(["-q", "export", "--format", "release", "--checkpoint", str(ulr_checkpoint), "--output", str(out)])
    assert (out / MANIFEST).is_file()
    return out


@pytest.fixture(scope="module")
def release_fp32(tmp_path_factory, ulr_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("rel32") / "tiny-ulr-fp32"
    export_release(ulr_checkpoint, out, dtype="float32", max_file_bytes=16384)  # several files, tensors cut
    return out


def damaged(release: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(release, copy)
    return copy


def source_ids(prepared: Path, lang: str, n: int = 12) -> list[list[int]]:
    data = PairData.load(prepared / "data" / f"{lang}-en" / "valid.npz")
    return [data.src[i].tolist() for i in range(min(n, len(data)))]


def greedy(path: Path, lang: str, ids: list[list[int]]) -> list[list[int]]:
    bundle, _ = load_bundle(path)
    bundle.model.fold_embeddings()
    return generate_ids(bundle, lang, ids, beam=1, batch_sentences=4)


# ---------------------------------------------------------------- the folder


def test_release_folder_holds_weights_only_checksummed(release: Path, ulr_checkpoint: Path) -> None:
    manifest = read_manifest(release)
    files = manifest["files"]
    assert manifest["format_version"] == 1
    assert set(files) == {p.name for p in release.iterdir()} - {MANIFEST}
    for name, f in files.items():
        assert f["bytes"] == (release / name).stat().st_size and f["sha256"] == sha256_file(release / name), name
    roles = {f["role"] for f in files.values()}
    assert roles == {"weights", "vocabulary", "config", "card"}
    state = read_checkpoint(ulr_checkpoint)
    # no optimizer state: the weights are smaller than half the fp32 model's tensors
    fp32 = sum(t.numel() * 4 for n, t in state["model"].items() if n != "decoder.output_projection.weight")
    weights = sum(f["bytes"] for f in files.values() if f["role"] == "weights")
    assert weights < 0.6 * fp32, (weights, fp32)
    for name, f in files.items():
        if f["role"] == "weights":
            shard = torch.load(release / name, weights_only=True)
            assert all(t.dtype in (torch.float16, torch.bfloat16, torch.int64) for t in shard.values())
            assert not any("optimizer" in k or "exp_avg" in k for k in shard)
    # the vocabularies are the checkpoint's, byte for byte
    assert (release / "en.model").read_bytes() == state["tgt_vocab"]
    for table, proto in state["src_vocabs"].items():
        assert (release / f"src-{table}.model").read_bytes() == proto
    # the ULR inputs a new language needs are there
    config = json.loads((release / "model.json").read_text())
    for name in ("encoder.embed_tokens.en_vectors", "encoder.embed_tokens.key_ids", "encoder.embed_tokens.queries.de.weight"):
        assert name in config["tensors"], name
    assert config["aliases"] == {"decoder.output_projection.weight": "decoder.embed_tokens.weight"}


def test_small_file_limit_splits_tensors_and_round_trips_exactly(release_fp32: Path, ulr_checkpoint: Path) -> None:
    files = read_manifest(release_fp32)["files"]
    shards = [n for n, f in files.items() if f["role"] == "weights"]
    assert len(shards) > 3 and all(files[n]["bytes"] <= 16384 for n in shards)
    config = json.loads((release_fp32 / "model.json").read_text())
    assert any(len(t["parts"]) > 1 for t in config["tensors"].values())  # some tensor was cut
    state = read_release(release_fp32)
    ref = read_checkpoint(ulr_checkpoint)["model"]
    assert set(state["model"]) == set(ref)
    for name, t in ref.items():
        assert state["model"][name].dtype == t.dtype and torch.equal(state["model"][name], t), name


def test_fp32_release_translates_exactly_like_the_checkpoint(release_fp32: Path, ulr_checkpoint: Path, prepared: Path) -> None:
    for lang in ("de", "fr"):
        ids = source_ids(prepared, lang)
        assert greedy(release_fp32, lang, ids) == greedy(ulr_checkpoint, lang, ids)


def test_fp16_release_within_rounding_and_same_greedy_output(release: Path, ulr_checkpoint: Path, prepared: Path) -> None:
    state = read_release(release)
    for name, t in read_checkpoint(ulr_checkpoint)["model"].items():
        got = state["model"][name]
        assert got.dtype == t.dtype, name
        if t.is_floating_point():
            # half an fp16 ulp (2^-11 relative), or fp16's subnormal spacing near zero
            assert torch.all((got - t).abs() <= t.abs() * 2**-11 + 2**-24), name
        else:
            assert torch.equal(got, t), name
    same = total = 0
    for lang in ("de", "fr", "es"):
        ids = source_ids(prepared, lang)
        a, b = greedy(release, lang, ids), greedy(ulr_checkpoint, lang, ids)
        same += sum(x == y for x, y in zip(a, b))
        total += len(a)
    assert same == total, f"{same}/{total} greedy outputs identical"


# ---------------------------------------------------------------- the commands read it as it is


def test_translate_a_source_language_from_the_release(capsys, release: Path, release_fp32: Path, ulr_checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.de"
    src.write_text("Ich habe Hunger.\nWo ist der Bahnhof?\n\nDas Haus ist groß.\n", encoding="utf-8")
    outs = [run_ok(capsys, "translate", "--checkpoint", str(p), "--lang", "de", "--input", str(src), "--beam", "2", "--threads", "1")
            for p in (ulr_checkpoint, release_fp32, release)]
    assert len(outs[0].split("\n")) == 5 and outs[0].split("\n")[2] == ""
    assert outs[1] == outs[0]  # fp32: exactly
    assert outs[2] == outs[0]  # fp16: the same on these lines (within rounding)


def test_adapt_and_evaluate_from_the_release_and_the_pack(capsys, release: Path, minipack: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapt-ro"
    result = json.loads(run_ok(
        capsys, "adapt", "--checkpoint", str(release), "--lang", "ro", "--data", str(minipack), "--output", str(out),
        "--src-vocab-size", str(ADAPT_VOCAB), "--max-tokens", str(MAX_TOKENS), "--max-steps", "2", "--validate-every", "0",
        "--bleu-sentences", "4", "--warmup-steps", "1", "--vector-epochs", "1", "--threads", "1",
    ))
    assert result["step"] == 2 and result["added"]["vocabulary"] == "new" and "alignment" in result["added"]
    assert result["timing"]["validations"] >= 1
    bundle, state = load_bundle(result["best"])
    assert "ro" in bundle.languages() and "de" in bundle.languages()
    assert state["run_config"]["checkpoint"] == str(release)
    # the adapted model kept the released source languages' weights where adaptation does not reach
    rel = read_release(release)["model"]
    assert torch.equal(bundle.model.state_dict()["encoder.embed_tokens.queries.de.weight"], rel["encoder.embed_tokens.queries.de.weight"])
    ev = json.loads(run_ok(capsys, "evaluate", "--checkpoint", result["best"], "--lang", "ro", "--data", str(minipack),
                           "--output-dir", str(tmp_path / "eval"), "--max-sentences", "4", "--beam", "1", "--threads", "1"))
    assert ev["test"] == "newstest2016" and ev["sentences"] == 4
    assert ev["references"] == str(minipack / "ro-en" / "newstest2016.en")


def test_pack_sets_read_as_the_prepared_folder_holds_them(minipack: Path, prepared: Path) -> None:
    for role in ("adapt", "adapt-valid", "test"):
        a, b = read_protected(minipack, "ro", role), read_protected(prepared, "ro", role)
        assert (a.name, a.src, a.tgt) == (b.name, b.src, b.tgt), role


def test_ctranslate2_export_of_a_release(capsys, release: Path, tmp_path: Path) -> None:
    pytest.importorskip("ctranslate2")
    out = tmp_path / "ct2"
    meta = json.loads(run_ok(capsys, "export", "--checkpoint", str(release), "--output", str(out)))
    assert meta["source_checkpoint"]["release"] is True
    assert meta["source_checkpoint"]["sha256"] == sha256_file(release / MANIFEST)
    native = run_ok(capsys, "translate", "--checkpoint", str(release), "--lang", "fr", "--beam", "1", "--threads", "1",
                    "--input", str(_write(tmp_path / "in.fr", "Bonjour.\nOù est la gare ?\n")))
    ct2 = run_ok(capsys, "translate", "--engine", "ctranslate2", "--model", str(out), "--lang", "fr", "--beam", "1",
                 "--compute-type", "float32", "--input", str(tmp_path / "in.fr"))
    assert ct2 == native


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def adapt_recipe(tmp_path: Path, release: Path, minipack: Path, show: int) -> Path:
    """recipes/adapt-ro.yaml in miniature: 2 steps from `release`, 3 test lines."""
    recipe = tmp_path / "adapt-ro.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "adapt-ro", "workdir": str(tmp_path / "work"), "pretrained": str(release), "data": str(minipack),
        "targets": ["ro"], "show": show,
        "adapt": {"src_vocab_size": ADAPT_VOCAB, "max_tokens": MAX_TOKENS, "max_steps": 2, "validate_every": 0,
                  "bleu_sentences": 4, "warmup_steps": 1, "vector_epochs": 1, "patience": 0},
        "evaluate": {"beam": 1, "max_sentences": 3},
    }), encoding="utf-8")
    return recipe


def test_recipe_adapts_a_release_from_the_pack(capsys, release: Path, minipack: Path, tmp_path: Path) -> None:
    code = main(["recipe", "run", str(adapt_recipe(tmp_path, release, minipack, show=2)), "--threads", "1"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert not (tmp_path / "work" / "prepared").exists()  # nothing prepared, nothing pre-trained
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    row = results["results"][0]
    assert row["adapt_steps"] == 2 and row["sentences"] == 3
    assert {"adapt_setup_seconds", "adapt_steps_seconds", "adapt_validation_seconds", "decode_seconds"} <= set(row["timing"])
    ref = read_protected(minipack, "ro", "test")
    assert f"source:    {ref.src[0]}" in err and f"reference: {ref.tgt[1]}" in err and "output:" in err


def test_release_report_fills_the_card_from_measured_runs(capsys, release: Path, minipack: Path, tmp_path: Path) -> None:
    from evaluation.release_report import main as report_main

    rel = tmp_path / "models" / "mini-ulr"
    shutil.copytree(release, rel)
    assert main(["recipe", "run", str(adapt_recipe(tmp_path, rel, minipack, show=0)), "--threads", "1"]) == 0
    results = tmp_path / "work" / "results.json"
    row = json.loads(results.read_text())["results"][0]
    out = tmp_path / "results"
    argv = [str(rel), "--adapt", str(results), "--adapt-command", "mtmeta recipe run adapt-ro.yaml", "--results-dir", str(out)]
    assert report_main(argv) == 0
    card = (rel / CARD).read_text(encoding="utf-8")
    assert f"| ro-en | {row['test']} (3 lines) | all | 2 | 1 | {row['bleu']:.2f} | {row['chrf']:.2f} |" in card
    assert "    mtmeta recipe run adapt-ro.yaml" in card and "(none yet)" not in card
    assert (out / "mini-ulr" / "hyps" / f"ro-en.{row['test']}.hyp").read_text() == Path(row["hypotheses"]).read_text()
    read_release(rel)  # the manifest knows the new card
    capsys.readouterr()
    # a number that does not re-score from its hypotheses, and results of another model: one line, exit 2
    bad = json.loads(results.read_text())
    bad["results"][0]["bleu"] += 1.0
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert report_main([*argv[:2], str(tmp_path / "bad.json"), *argv[3:]]) == 2
    assert "re-scores to BLEU" in capsys.readouterr().err
    assert report_main([str(release), *argv[1:]]) == 2
    assert f"not from {release}" in capsys.readouterr().err


# ---------------------------------------------------------------- the model card


def test_model_card_and_its_score_slot(release: Path, tmp_path: Path) -> None:
    card = (release / CARD).read_text(encoding="utf-8")
    for words in ("## Training data", "## Licenses of the data", "CC BY 2.0 FR", "## Training budget", "updates, ",
                  "## Scores", "<!-- scores:begin -->", "de, es, fr", "float16", "mtmeta export --format release"):
        assert words in card, words
    copy = damaged(release, tmp_path)
    fill_card_scores(copy, "| pair | BLEU |\n|---|---:|\n| ro-en | 8.1 |")
    assert "| ro-en | 8.1 |" in (copy / CARD).read_text(encoding="utf-8")
    assert read_manifest(copy)["files"][CARD]["sha256"] == sha256_file(copy / CARD)
    read_release(copy)  # still verifies
    # filling the card does not bless a damaged weight file
    shard = next(n for n, f in read_manifest(copy)["files"].items() if f["role"] == "weights")
    data = bytearray((copy / shard).read_bytes())
    data[len(data) // 2] ^= 1
    (copy / shard).write_bytes(bytes(data))
    fill_card_scores(copy, "again")
    with pytest.raises(Exception, match="SHA-256"):
        read_release(copy)


# ---------------------------------------------------------------- damaged releases: one line, exit 2


def _first_weights(folder: Path) -> str:
    return sorted(n for n, f in read_manifest(folder)["files"].items() if f["role"] == "weights")[0]


def test_truncated_weight_file(capsys, release: Path, tmp_path: Path) -> None:
    copy = damaged(release, tmp_path)
    name = _first_weights(copy)
    size = (copy / name).stat().st_size
    with open(copy / name, "r+b") as f:
        f.truncate(size // 2)
    run_error(capsys, "translate", "--checkpoint", str(copy), "--lang", "de", "--input", str(_write(tmp_path / "x", "Hallo\n")),
              expect=[str(copy / name), "truncated", str(size // 2), str(size)])


def test_checksum_mismatch(capsys, release: Path, tmp_path: Path) -> None:
    copy = damaged(release, tmp_path)
    name = _first_weights(copy)
    data = bytearray((copy / name).read_bytes())
    data[-100] ^= 0xFF  # same size, one byte changed
    (copy / name).write_bytes(bytes(data))
    run_error(capsys, "translate", "--checkpoint", str(copy), "--lang", "de", "--input", str(_write(tmp_path / "x", "Hallo\n")),
              expect=[str(copy / name), "SHA-256"])


def test_missing_manifest(capsys, release: Path, minipack: Path, tmp_path: Path) -> None:
    copy = damaged(release, tmp_path)
    (copy / MANIFEST).unlink()
    run_error(capsys, "adapt", "--checkpoint", str(copy), "--lang", "ro", "--data", str(minipack), "--output", str(tmp_path / "a"),
              expect=[str(copy / MANIFEST), "missing", "not an mtmeta release"])


def test_garbled_manifest(capsys, release: Path, minipack: Path, tmp_path: Path) -> None:
    copy = damaged(release, tmp_path)
    text = (copy / MANIFEST).read_text()
    (copy / MANIFEST).write_text(text[: len(text) // 2])
    run_error(capsys, "evaluate", "--checkpoint", str(copy), "--lang", "ro", "--data", str(minipack), "--output-dir", str(tmp_path / "e"),
              expect=[str(copy / MANIFEST), "unreadable"])


def test_missing_vocabulary_file(capsys, release: Path, tmp_path: Path) -> None:
    copy = damaged(release, tmp_path)
    (copy / "src-de.model").unlink()
    run_error(capsys, "export", "--checkpoint", str(copy), "--output", str(tmp_path / "ct2"),
              expect=[str(copy / "src-de.model"), "missing"])


def test_export_refuses_to_overwrite_without_force(capsys, release: Path, ulr_checkpoint: Path, tmp_path: Path) -> None:
    copy = damaged(release, tmp_path)
    run_error(capsys, "export", "--format", "release", "--checkpoint", str(ulr_checkpoint), "--output", str(copy),
              expect=["--force"])
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    run_error(capsys, "export", "--format", "release", "--checkpoint", str(ulr_checkpoint), "--output", str(other),
              expect=["not an mtmeta release"])
    assert (other / "keep.txt").read_text() == "mine"
