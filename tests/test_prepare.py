"""data_prep.prepare on the minipack fixture: counts, decontamination of the
written data, reuse and rebuild, interrupted runs, vocabulary modes and the
protected texts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import data_prep.prepare as prep_mod
from data_prep.cleaning import normalize
from data_prep.prepare import load_summary, prepare, read_protected
from data_prep.vocab import Vocab
from mtmeta import config as C
from mtmeta.data import PairData
from mtmeta.errors import DataError

from conftest import SRC_VOCAB, TGT_VOCAB, prepare_config, quiet

LANGS = ["de", "es", "fr"]
PROTECTED_FILES = {
    ("adapt", "flores200-devtest-adapt800"): 200,
    ("adapt-valid", "flores200-devtest-valid"): 40,
    ("test", "newstest2016"): 60,
}


def ws(s: str) -> str:
    return " ".join(s.split())


def fixture_lines(minipack: Path, pair: str, name: str, side: str) -> list[str]:
    return (minipack / pair / f"{name}.{side}").read_text(encoding="utf-8").split("\n")[:-1]


def protected_references(minipack: Path) -> set[str]:
    refs = set()
    for _, name in PROTECTED_FILES:
        refs |= {ws(t) for t in fixture_lines(minipack, "ro-en", name, "en")}
    return refs - {""}


def decoded_english(prepared: Path, lang: str, split: str) -> list[str]:
    en = Vocab.load(prepared / "vocab" / "en.model", "en")
    data = PairData.load(prepared / "data" / f"{lang}-en" / f"{split}.npz")
    return [en.decode(t) for t in data.tgt]


# ---------------------------------------------------------------- counts


def test_summary_counts(prepared: Path) -> None:
    s = load_summary(prepared)
    assert s["train_langs"] == LANGS
    assert s["target_langs"] == ["ro"]
    assert s["vocab_mode"] == "per_language"
    de = s["counts"]["de"]
    assert de["input"] == 608
    assert de["duplicate"] == 3
    # All five contaminated pairs are gone, whichever filter caught them.
    assert de.get("contaminated_en", 0) + de.get("length_ratio", 0) == 5
    assert de["train"] + de["valid"] == 608 - 5 - 3
    assert de["valid"] == 20
    for lang in ("es", "fr"):
        c = s["counts"][lang]
        assert c["input"] == 600 and c["train"] + c["valid"] == 600 and c["valid"] == 20
        assert c.get("contaminated_en", 0) == c.get("duplicate", 0) == 0
    assert s["totals"]["train"] == sum(s["counts"][x]["train"] for x in LANGS)
    cont = s["contamination"]
    assert cont["meta_train_en_lines_in_adapt_valid_test"] == 5
    # what the independent re-check read back: every written pair against every protected set
    checked = cont["verified_no_overlap"]
    assert checked["overlap"] == 0 and checked["protected_sets"] >= 3
    assert checked["pairs_checked"] == sum(s["counts"][x]["train"] + s["counts"][x]["valid"] for x in LANGS)
    for lang in LANGS:
        info = s["languages"][lang]
        assert info["pairs"] == s["counts"][lang]["train"]
        assert 100 < info["src_vocab"] <= SRC_VOCAB
    assert 100 < s["tgt_vocab"] <= TGT_VOCAB


def test_all_contaminated_pairs_are_counted_as_contamination(prepared: Path) -> None:
    s = load_summary(prepared)
    assert s["counts"]["de"]["contaminated_en"] == 5
    assert s["contamination"]["pairs_removed_english"] == 5


def test_decontamination_counts_without_ratio_filter(tmp_path: Path) -> None:
    s = prepare(prepare_config(tmp_path / "p", max_len_ratio=100.0), log=quiet)
    assert s["counts"]["de"]["contaminated_en"] == 5
    assert s["counts"]["de"]["duplicate"] == 3
    assert s["contamination"]["pairs_removed_english"] == 5
    assert s["counts"]["de"]["train"] + s["counts"]["de"]["valid"] == 600


# ---------------------------------------------------------------- written data


def test_written_data_has_no_protected_english(prepared: Path, minipack: Path) -> None:
    refs = protected_references(minipack)
    assert len(refs) == 300  # adapt 200 + valid 40 + test 60, all distinct
    s = load_summary(prepared)
    for lang in LANGS:
        source_en = {ws(normalize(t)) for t in fixture_lines(minipack, f"{lang}-en", "tatoeba-v2021-08-07", "en")}
        for split in ("train", "valid"):
            lines = decoded_english(prepared, lang, split)
            assert len(lines) == s["counts"][lang][split]
            leaked = [t for t in lines if ws(t) in refs]
            assert leaked == [], f"{lang} {split}: {leaked[:2]}"
            if split == "train":
                # Decoding is lossless on training text: every line is a
                # (normalised) line of the language's input file.
                assert all(ws(t) in source_en for t in lines)


def test_duplicates_keep_one_copy(prepared: Path, minipack: Path) -> None:
    de = decoded_english(prepared, "de", "train") + decoded_english(prepared, "de", "valid")
    for sentence in ("It's a legal grey area.", "It's good training.", "That is an interesting claim."):
        assert de.count(sentence) == 1, sentence


def test_protected_texts_written(prepared: Path, minipack: Path) -> None:
    s = load_summary(prepared)
    assert {(p["role"], p["name"]): p["lines"] for p in s["protected"]} == PROTECTED_FILES
    for (role, name), n in PROTECTED_FILES.items():
        folder = prepared / "text" / "ro-en" / role
        src = (folder / f"{name}.ro").read_text(encoding="utf-8").split("\n")[:-1]
        ref_bytes = (folder / f"{name}.en").read_bytes()
        assert len(src) == n
        # References are byte-identical to the input, sources normalised.
        assert ref_bytes == (minipack / "ro-en" / f"{name}.en").read_bytes()
        assert src == [normalize(x) for x in fixture_lines(minipack, "ro-en", name, "ro")]
    test = read_protected(prepared, "ro", "test")
    assert (test.name, len(test.src), len(test.tgt)) == ("newstest2016", 60, 60)


def test_per_language_vocabularies(prepared: Path) -> None:
    names = sorted(p.name for p in (prepared / "vocab").iterdir())
    assert names == ["de.model", "en.model", "es.model", "fr.model"]
    de = Vocab.load(prepared / "vocab" / "de.model", "de")
    assert de.decode(de.encode("Das ist gut.")) == "Das ist gut."
    assert not (prepared.parent / (prepared.name + ".partial")).exists()


def test_joint_vocabulary_mode(tmp_path: Path) -> None:
    out = tmp_path / "joint"
    s = prepare(prepare_config(out, vocab_mode="joint"), log=quiet)
    assert s["vocab_mode"] == "joint"
    names = sorted(p.name for p in (out / "vocab").iterdir())
    assert names == ["en.model", "src.model"]
    src = Vocab.load(out / "vocab" / "src.model", "src")
    assert src.decode(src.encode("C'est bon.")) == "C'est bon."
    assert {s["languages"][x]["src_vocab"] for x in LANGS} == {len(src)}


# ---------------------------------------------------------------- reuse / rebuild / interruption


def test_rerun_reuses_and_changed_setting_rebuilds(tmp_path: Path) -> None:
    out = tmp_path / "p"
    first = prepare(prepare_config(out), log=quiet)
    mtime = (out / "summary.json").stat().st_mtime_ns
    messages: list[str] = []
    again = prepare(prepare_config(out), log=messages.append)
    assert again["fingerprint"] == first["fingerprint"]
    assert any("reusing" in m for m in messages)
    assert (out / "summary.json").stat().st_mtime_ns == mtime

    changed = prepare(prepare_config(out, tgt_vocab_size=300), log=quiet)
    assert changed["fingerprint"] != first["fingerprint"]
    assert changed["tgt_vocab"] <= 300 < first["tgt_vocab"]
    assert json.loads((out / "summary.json").read_text())["fingerprint"] == changed["fingerprint"]
    # The output path is not part of the fingerprint: same inputs elsewhere match.
    other = prepare(prepare_config(tmp_path / "q", tgt_vocab_size=300), log=quiet)
    assert other["fingerprint"] == changed["fingerprint"]


def test_leftover_partial_folder_is_not_prepared(tmp_path: Path, prepared: Path) -> None:
    import shutil

    out = tmp_path / "p"
    partial = tmp_path / "p.partial"
    shutil.copytree(prepared, partial)  # looks complete, even has a summary
    with pytest.raises(DataError, match="not a prepared folder"):
        load_summary(out)
    messages: list[str] = []
    s = prepare(prepare_config(out), log=messages.append)
    assert not any("reusing" in m for m in messages)
    assert (out / "summary.json").is_file() and not partial.exists()
    assert s["fingerprint"] == load_summary(prepared)["fingerprint"]


def test_interrupted_prepare_leaves_no_prepared_folder(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "p"
    calls = []

    def boom(*args, **kwargs):
        calls.append(args[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(prep_mod, "save_pairs", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(prepare_config(out), log=quiet)
    assert calls, "save_pairs was never reached"
    assert not out.exists()
    with pytest.raises(DataError):
        load_summary(out)
    monkeypatch.undo()
    s = prepare(prepare_config(out), log=quiet)
    assert s["counts"]["de"]["duplicate"] == 3
    assert not (tmp_path / "p.partial").exists()


def test_interrupted_rebuild_keeps_previous_folder(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "p"
    first = prepare(prepare_config(out), log=quiet)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep_mod, "save_pairs", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(prepare_config(out, seed=2), log=quiet)
    assert load_summary(out)["fingerprint"] == first["fingerprint"]
    assert (out / "data" / "de-en" / "train.npz").is_file()


# ---------------------------------------------------------------- never destroy a user's folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_folder_of_user_files_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my thesis\n")
    with pytest.raises(DataError, match="not made by `mtmeta prepare`"):
        prepare(prepare_config(out), log=quiet)
    assert (out / "notes.txt").read_text() == "my thesis\n"


def test_output_holding_the_input_pack_is_refused(tmp_path: Path, minipack: Path) -> None:
    import shutil

    d = tmp_path / "d"
    shutil.copytree(minipack, d / "corpus")
    (d / "notes.txt").write_text("keep\n")
    before = _tree(d)
    cfg = prepare_config(d)
    cfg.sources = [C.SourceSpec(type="pack", path=str(d / "corpus"))]
    with pytest.raises(DataError, match="contains the input"):
        prepare(cfg, log=quiet)
    assert _tree(d) == before


def test_output_above_the_working_directory_is_refused(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "parent" / "project"
    work.mkdir(parents=True)
    (tmp_path / "parent" / "other.txt").write_text("x")
    monkeypatch.chdir(work)
    with pytest.raises(DataError, match="contains the current directory"):
        prepare(prepare_config(Path("..")), log=quiet)
    assert (tmp_path / "parent" / "other.txt").read_text() == "x" and work.is_dir()


def test_foreign_partial_folder_is_refused(tmp_path: Path) -> None:
    partial = tmp_path / "p.partial"
    partial.mkdir()
    (partial / "data.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="partial folder"):
        prepare(prepare_config(tmp_path / "p"), log=quiet)
    assert (partial / "data.csv").read_text() == "1,2\n"


def test_empty_output_folder_is_used(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    prepare(prepare_config(out), log=quiet)
    assert load_summary(out)["train_langs"]


def test_incomplete_prepared_folder_is_never_reused(tmp_path: Path) -> None:
    """What a kill mid-delete left behind with the old code: a summary without data."""
    import shutil

    out = tmp_path / "p"
    first = prepare(prepare_config(out), log=quiet)
    shutil.rmtree(out / "data")
    with pytest.raises(DataError, match="incomplete prepared folder"):
        load_summary(out)
    messages: list[str] = []
    again = prepare(prepare_config(out), log=messages.append)
    assert not any("reusing" in m for m in messages)
    assert again["fingerprint"] == first["fingerprint"]
    assert (out / "data" / "de-en" / "train.npz").is_file()


def test_kill_between_the_swap_renames_recovers(tmp_path: Path, monkeypatch) -> None:
    """Killed after the old output was moved aside but before the new one was
    renamed in: no folder looks prepared, and the next run rebuilds cleanly."""
    out = tmp_path / "p"
    prepare(prepare_config(out), log=quiet)
    real_rename = Path.rename

    def killed_on_second_rename(self, target):
        if str(self).endswith(".partial"):
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        prepare(prepare_config(out, seed=2), log=quiet)
    monkeypatch.undo()
    assert not out.exists() and (tmp_path / "p.old").is_dir() and (tmp_path / "p.partial").is_dir()
    s = prepare(prepare_config(out, seed=2), log=quiet)
    assert load_summary(out)["fingerprint"] == s["fingerprint"]
    assert not (tmp_path / "p.old").exists() and not (tmp_path / "p.partial").exists()


def test_leak_check_reads_the_written_data_back_and_fails_on_a_leak(tmp_path: Path, monkeypatch) -> None:
    """The re-check is not the filter applied again: with decontamination
    switched off, the pairs it would have removed are written, and the check
    (written .npz decoded, against the protected sets read from disk) refuses
    to publish the folder."""
    monkeypatch.setattr(prep_mod, "protected_keys", lambda texts: (set(), set()))
    out = tmp_path / "leaky"
    with pytest.raises(DataError, match="occur in a protected"):
        prepare(prepare_config(out), log=quiet)
    assert not (out / "summary.json").exists()


def test_leak_check_catches_a_source_side_leak(prepared: Path, tmp_path: Path) -> None:
    """Both sides: a protected *source* sentence written into training data is found."""
    import shutil

    from data_prep.prepared import load_pairs, save_pairs

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    prep_mod.verify_no_overlap(copy, LANGS)  # clean as written
    ro_test = read_protected(copy, "ro", "test")
    src_vocab = Vocab.load(copy / "vocab" / "de.model", "de")
    en_vocab = Vocab.load(copy / "vocab" / "en.model", "en")
    path = copy / "data" / "de-en" / "train.npz"
    src, tgt = load_pairs(path)
    # a source sentence of the ro test set, with an English side no protected set has
    sentence = next(x for x in ro_test.src if src_vocab.decode(src_vocab.encode(x)) == x)
    save_pairs(path, src + [src_vocab.encode(sentence)], tgt + [en_vocab.encode("A harmless English line.")])
    with pytest.raises(DataError, match="protected"):
        prep_mod.verify_no_overlap(copy, LANGS)


def test_vocabulary_from_a_sampled_corpus_is_the_same_in_every_process(tmp_path: Path, minipack: Path) -> None:
    """Above max_sentences the corpus is sampled; the sample (and so the
    vocabulary) must follow the seed in a fresh process too."""
    import subprocess
    import sys

    code = (
        "import glob, hashlib\n"
        "from data_prep.vocab import train_vocab\n"
        f"lines = [l for f in sorted(glob.glob({str(minipack)!r} + '/*-en/*.en')) for l in open(f, encoding='utf-8').read().splitlines()]\n"
        "print(hashlib.sha256(train_vocab(lines, 'en', 300, seed=3, max_sentences=500).proto).hexdigest())\n"
    )
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1] for _ in range(3)}
    assert len(runs) == 1, runs
