"""Loaders in data_prep.sources, on tiny local fixtures (no network)."""
from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.sources import load_hf_dataset, load_pack, load_plain_files, load_sacrebleu, read_lines
from mtmeta.errors import DataError

REAL_PACK = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
HEADER = "pair\trole\tname\tlines\torigin\tlicense\n"


def write_pair(root: Path, lang: str, name: str, src: list[str], tgt: list[str]) -> None:
    d = root / f"{lang}-en"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.{lang}").write_text("".join(s + "\n" for s in src), encoding="utf-8")
    (d / f"{name}.en").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    write_pair(tmp_path, "de", "news", ["Hallo Welt", "Guten Tag"], ["Hello world", "Good day"])
    write_pair(tmp_path, "de", "tatoeba", ["Ja"], ["Yes"])
    write_pair(tmp_path, "ro", "test16", ["Bună ziua", "Mulțumesc", "Da"], ["Good day", "Thank you", "Yes"])
    write_pair(tmp_path, "ro", "adapt", ["Nu"], ["No"])
    rows = [
        ("de-en", "meta-train", "tatoeba", 1),
        ("de-en", "meta-train", "news", 2),
        ("ro-en", "test", "test16", 3),
        ("ro-en", "adapt", "adapt", 1),
    ]
    body = "".join(f"{p}\t{r}\t{n}\t{k}\tsomewhere\tCC0\n" for p, r, n, k in rows)
    (tmp_path / "MANIFEST.tsv").write_text(HEADER + body, encoding="utf-8")
    return tmp_path


# ---------------------------------------------------------------- pack


def test_pack_with_manifest_roles_order_and_filters(pack: Path) -> None:
    texts = load_pack(pack)
    assert [(t.lang, t.name, t.role, len(t)) for t in texts] == [
        ("de", "news", "meta-train", 2),
        ("de", "tatoeba", "meta-train", 1),
        ("ro", "adapt", "adapt", 1),
        ("ro", "test16", "test", 3),
    ]
    ro_test = texts[3]
    assert ro_test.src[0] == "Bună ziua" and ro_test.tgt[2] == "Yes"
    assert ro_test.pair == "ro-en" and ro_test.meta["license"] == "CC0"

    assert [t.name for t in load_pack(pack, langs=["ro"])] == ["adapt", "test16"]
    assert [t.name for t in load_pack(pack, roles=["test", "adapt"])] == ["adapt", "test16"]
    assert [t.name for t in load_pack(pack, langs=["de"], roles=["test"])] == []


def test_pack_without_manifest_uses_default_role(pack: Path) -> None:
    (pack / "MANIFEST.tsv").unlink()
    (pack / "ro-en" / "notes.txt").write_text("ignored\n")  # neither .ro nor .en
    texts = load_pack(pack, default_role="adapt-extra")
    assert [(t.lang, t.name) for t in texts] == [("de", "news"), ("de", "tatoeba"), ("ro", "adapt"), ("ro", "test16")]
    assert {t.role for t in texts} == {"adapt-extra"}
    assert [t.name for t in load_pack(pack, langs=["de"])] == ["news", "tatoeba"]


def test_pack_filter_and_root_errors(pack: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        load_pack(tmp_path / "nope")
    with pytest.raises(DataError, match="has no fi"):
        load_pack(pack, langs=["fi"])
    with pytest.raises(DataError, match="unknown role"):
        load_pack(pack, roles=["training"])


def test_real_pack_ro() -> None:
    if not (REAL_PACK / "MANIFEST.tsv").is_file():
        pytest.skip(f"corpus pack not found at {REAL_PACK}")
    texts = {(t.role, t.name): t for t in load_pack(REAL_PACK, langs=["ro"])}
    assert {t.lang for t in texts.values()} == {"ro"}
    assert len(texts["test", "newstest2016"]) == 1999
    assert len(texts["adapt", "flores200-devtest-adapt800"]) == 800
    assert all(len(t.src) == len(t.tgt) for t in texts.values())


# ---------------------------------------------------------------- bad input


def test_mismatched_line_counts(tmp_path: Path) -> None:
    write_pair(tmp_path, "ro", "x", ["a", "b", "c"], ["a", "b"])
    with pytest.raises(DataError, match=r"x\.ro has 3 lines but .*x\.en has 2"):
        load_pack(tmp_path)


def test_missing_en_side(pack: Path) -> None:
    (pack / "ro-en" / "test16.en").unlink()
    with pytest.raises(DataError, match=r"test16\.en"):
        load_pack(pack)
    (pack / "MANIFEST.tsv").unlink()
    with pytest.raises(DataError, match=r"test16\.en: missing"):
        load_pack(pack)


def test_undecodable_bytes(tmp_path: Path) -> None:
    write_pair(tmp_path, "ro", "bad", ["ok", "ok"], ["ok", "ok"])
    (tmp_path / "ro-en" / "bad.ro").write_bytes(b"fine\n\xff\xfe bad\n")
    with pytest.raises(DataError, match=r"bad\.ro line 2: not valid UTF-8"):
        load_pack(tmp_path)


def test_bad_language_code(tmp_path: Path) -> None:
    write_pair(tmp_path, "RO", "x", ["a"], ["a"])
    with pytest.raises(DataError, match=r"bad language code 'RO'.*RO-en"):
        load_pack(tmp_path)
    with pytest.raises(DataError, match=r"bad language code 'romanian'.*x\.RO"):
        load_plain_files(tmp_path / "RO-en" / "x.RO", tmp_path / "RO-en" / "x.en", "romanian", "test")


def test_empty_file(tmp_path: Path) -> None:
    write_pair(tmp_path, "ro", "empty", [], [])
    with pytest.raises(DataError, match=r"empty\.ro is empty"):
        load_pack(tmp_path)


def test_manifest_line_count_mismatch(pack: Path) -> None:
    manifest = pack / "MANIFEST.tsv"
    manifest.write_text(manifest.read_text().replace("test16\t3", "test16\t4"))
    with pytest.raises(DataError, match=r"test16\.ro has 3 lines but MANIFEST\.tsv says 4"):
        load_pack(pack)


def test_manifest_unknown_role(pack: Path) -> None:
    manifest = pack / "MANIFEST.tsv"
    manifest.write_text(manifest.read_text().replace("\tadapt\t", "\tfinetune\t"))
    with pytest.raises(DataError, match=r"unknown role 'finetune' in .*MANIFEST\.tsv line 5"):
        load_pack(pack)


def test_read_lines_keeps_inner_whitespace(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes("a \r\n\n b\u2028c\t\nlast".encode())
    assert read_lines(p) == ["a ", "", " b\u2028c\t", "last"]


def test_plain_files(tmp_path: Path) -> None:
    write_pair(tmp_path, "lv", "dev", ["Sveiki", "Paldies"], ["Hello", "Thanks"])
    t = load_plain_files(tmp_path / "lv-en" / "dev.lv", tmp_path / "lv-en" / "dev.en", "lv", "adapt-valid")
    assert (t.lang, t.role, t.name, t.src, t.tgt) == ("lv", "adapt-valid", "dev", ["Sveiki", "Paldies"], ["Hello", "Thanks"])
    with pytest.raises(DataError, match="unknown role"):
        load_plain_files(tmp_path / "lv-en" / "dev.lv", tmp_path / "lv-en" / "dev.en", "lv", "train")


# ---------------------------------------------------------------- Hugging Face


def test_hf_translation_column(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{"ro": "Bună", "en": "Hi"}, {"ro": "Da", "en": "Yes"}]
    datasets.Dataset.from_dict({"translation": rows}).save_to_disk(str(tmp_path / "wmt_ro"))
    t = load_hf_dataset(tmp_path / "wmt_ro", "ro", "test")
    assert (t.name, t.src, t.tgt) == ("wmt_ro", ["Bună", "Da"], ["Hi", "Yes"])
    with pytest.raises(DataError, match="lacks 'fi'"):
        load_hf_dataset(tmp_path / "wmt_ro", "fi", "test")


def test_hf_plain_columns(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"lv": ["Sveiki"], "en": ["Hello"], "id": [0]}).save_to_disk(str(tmp_path / "a"))
    t = load_hf_dataset(tmp_path / "a", "lv", "adapt", name="mine")
    assert (t.name, t.src, t.tgt) == ("mine", ["Sveiki"], ["Hello"])
    datasets.Dataset.from_dict({"source": ["Sveiki"], "target": ["Hello"]}).save_to_disk(str(tmp_path / "b"))
    t = load_hf_dataset(tmp_path / "b", "lv", "adapt", src_column="source", tgt_column="target")
    assert (t.src, t.tgt) == (["Sveiki"], ["Hello"])
    flores = {"id": [1], "sentence_lvs_Latn": ["Sveiki"], "sentence_eng_Latn": ["Hello"]}
    datasets.Dataset.from_dict(flores).save_to_disk(str(tmp_path / "flores"))
    t = load_hf_dataset(tmp_path / "flores", "lv", "adapt")
    assert (t.src, t.tgt) == (["Sveiki"], ["Hello"])


def test_hf_dataset_dict_split(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"tr": ["Merhaba"], "en": ["Hello"]}),
            "test": datasets.Dataset.from_dict({"tr": ["Evet", "Hayır"], "en": ["Yes", "No"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_hf_dataset(tmp_path / "dd", "tr", "meta-train").src == ["Merhaba"]
    t = load_hf_dataset(tmp_path / "dd", "tr", "test", split="test")
    assert (t.src, t.tgt, t.meta["split"]) == (["Evet", "Hayır"], ["Yes", "No"], "test")
    with pytest.raises(DataError, match=r"no split 'validation'; available splits: train, test"):
        load_hf_dataset(tmp_path / "dd", "tr", "test", split="validation")


def test_hf_missing_column(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"src": ["x"], "eng": ["y"]}).save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(DataError, match=r"odd.*no source column.*available columns: src, eng"):
        load_hf_dataset(tmp_path / "odd", "ko", "test")
    with pytest.raises(DataError, match=r"column 'nope'.*available columns: src, eng"):
        load_hf_dataset(tmp_path / "odd", "ko", "test", src_column="src", tgt_column="nope")


# ---------------------------------------------------------------- sacrebleu


def test_sacrebleu_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # sacrebleu checks for processed files $SACREBLEU/<set>/<set>.<pair>.<field>,
    # one per field: src, ref (ref-0, ref-1... with several), and for the WMT
    # SGML sets also docid/genre/origlang. Any one missing -> it downloads.
    monkeypatch.setenv("SACREBLEU", str(tmp_path))
    d = tmp_path / "wmt16"
    d.mkdir()
    fields = {
        "src": ["Bună ziua .", "Mulțumesc ."],
        "ref": ["Good day .", "Thank you ."],
        "docid": ["doc1", "doc1"],
        "genre": ["news", "news"],
        "origlang": ["ro", "ro"],
    }
    for field, lines in fields.items():
        (d / f"wmt16.ro-en.{field}").write_text("".join(s + "\n" for s in lines), encoding="utf-8")
    t = load_sacrebleu("wmt16", "ro")
    assert (t.lang, t.role, t.name) == ("ro", "test", "wmt16")
    assert (t.src, t.tgt) == (fields["src"], fields["ref"])
    assert t.meta["src_path"] == str(d / "wmt16.ro-en.src")
    assert not (d / "raw").exists()  # nothing was downloaded


def test_sacrebleu_unknown_set_or_pair() -> None:
    with pytest.raises(DataError, match=r"unknown sacrebleu test set 'wmt99'; available: .*wmt16"):
        load_sacrebleu("wmt99", "ro")
    with pytest.raises(DataError, match=r"'wmt16' has no ko-en; its X-en pairs: .*ro-en"):
        load_sacrebleu("wmt16", "ko")
