"""data_prep.cleaning: normalisation, training-text filters, duplicate and
contamination removal, protected keys."""
from __future__ import annotations

from collections import Counter

from data_prep.cleaning import (
    CleaningRules,
    clean_train_text,
    dedup_and_decontaminate,
    match_key,
    normalize,
    normalize_protected,
    protected_keys,
)
from data_prep.corpus import ParallelText


def pt(src, tgt, role="meta-train", lang="de", name="t") -> ParallelText:
    return ParallelText(lang, role, name, list(src), list(tgt), origin="mem")


# ---------------------------------------------------------------- normalize


def test_normalize_nfkc() -> None:
    assert normalize("ﬁne") == "fine"  # ligature
    assert normalize("ＡＢＣ１２３") == "ABC123"  # full-width
    assert normalize("e\u0301") == "é"  # combining accent composed
    assert normalize("x²") == "x2"


def test_normalize_removes_control_and_zero_width_characters() -> None:
    assert normalize("a\x00b\x07c\x1bd\x7fe\x85f") == "abcdef"
    assert normalize("\ufeffHello\u200b wor\u200eld\u200f") == "Hello world"


def test_normalize_collapses_whitespace() -> None:
    assert normalize("  a \t b\n\nc\r\n  ") == "a b c"
    assert normalize("a\u00a0\u2009b\u3000c") == "a b c"  # NBSP, thin and ideographic spaces
    assert normalize("   ") == ""
    assert normalize("") == ""


def test_normalize_is_idempotent_and_match_key_only_touches_whitespace() -> None:
    s = " ＨＩ\u200b  there\t"
    assert normalize(normalize(s)) == normalize(s) == "HI there"
    assert match_key("  ＨＩ  there ") == "ＨＩ there"  # no NFKC in match_key


# ---------------------------------------------------------------- clean_train_text


def test_clean_train_text_filters_and_counts() -> None:
    rules = CleaningRules(max_len_tokens=5, max_len_ratio=3.0, ratio_min_chars=10)
    pairs = [
        ("Guten Tag.", "Good day."),  # kept
        ("", "Nothing"),  # empty source
        ("Etwas", "   \t"),  # empty English after normalisation
        ("\u200b", "zero width only"),  # empty after control removal
        ("eins zwei drei vier fünf sechs", "one two"),  # too long (source, 6 words)
        ("kurz", "one two three four five six"),  # too long (English)
        ("Ein ganz normaler Satz", "A sentence of ten words that is too long here"),  # too long, not ratio
        ("Hallo Welt!", "Hello world, supercalifragilistic expialidocious"),  # 48/11 chars > 3
        ("A", "A very long English sentence"),  # short side < 2 chars, long >= 10
        ("ok", "fine"),  # both short: ratio filter does not apply
        ("  Viele   Leerzeichen ", " Many\tspaces  "),  # kept, normalised
    ]
    counts: Counter = Counter()
    out = clean_train_text(pt(*zip(*pairs)), rules, counts)
    assert counts == Counter({"empty": 3, "too_long": 3, "length_ratio": 2})
    assert out.src == ["Guten Tag.", "ok", "Viele Leerzeichen"]
    assert out.tgt == ["Good day.", "fine", "Many spaces"]
    assert (out.lang, out.role, out.name) == ("de", "meta-train", "t")


def test_clean_train_text_ratio_threshold_is_strict() -> None:
    rules = CleaningRules(max_len_tokens=100, max_len_ratio=2.0, ratio_min_chars=4)
    counts: Counter = Counter()
    out = clean_train_text(pt(["abcd", "abcd"], ["abcdefgh", "abcdefghi"]), rules, counts)
    assert out.tgt == ["abcdefgh"]  # ratio exactly 2.0 kept, 2.25 dropped
    assert counts["length_ratio"] == 1


def test_normalize_protected_keeps_every_line_and_reference_bytes() -> None:
    text = pt(["  Bună\u200b ziua ", ""], ["  Good  day ", ""], role="test", lang="ro")
    out = normalize_protected(text)
    assert out.src == ["Bună ziua", ""]
    assert out.tgt == ["  Good  day ", ""]  # references verbatim
    assert len(out) == 2


# ---------------------------------------------------------------- dedup / decontamination


def test_dedup_and_decontaminate() -> None:
    src_keys = {"Ich bin hier."}
    en_keys = {"The cat sat on the mat."}
    src = ["Die Katze.", "Ich bin hier.", "Hallo.", "Hallo.", "Hallo.", "Tschüss.", "Die Katze."]
    tgt = ["The cat sat on the mat.", "I am here.", "Hello.", "Hello.", "Hi.", "Bye.", "The cat."]
    counts: Counter = Counter()
    s, t = dedup_and_decontaminate(src, tgt, src_keys, en_keys, counts)
    assert list(zip(s, t)) == [("Hallo.", "Hello."), ("Hallo.", "Hi."), ("Tschüss.", "Bye."), ("Die Katze.", "The cat.")]
    assert counts == Counter({"contaminated_en": 1, "contaminated_src": 1, "duplicate": 1})


def test_contamination_matches_after_whitespace_normalisation() -> None:
    # The minipack case: English equal to a test reference but with extra spaces.
    src_keys, en_keys = protected_keys([pt(["x"], ["  UN  Chief  Says  No ", ], role="test", lang="ro")])
    assert en_keys == {"UN Chief Says No"}
    counts: Counter = Counter()
    s, t = dedup_and_decontaminate(["A", "B"], ["UN Chief  Says No", "UN Chief Says No!"], src_keys, en_keys, counts)
    assert t == ["UN Chief Says No!"]
    assert counts["contaminated_en"] == 1


def test_contamination_matches_nfkc_variants_through_the_pipeline() -> None:
    _, en_keys = protected_keys([pt(["x"], ["ﬁnal ＷＯＲＤ"], role="adapt", lang="ro")])
    cleaned = clean_train_text(pt(["Endgültiges Wort"], ["final WORD"]), CleaningRules(), Counter())
    counts: Counter = Counter()
    _, t = dedup_and_decontaminate(cleaned.src, cleaned.tgt, set(), en_keys, counts)
    assert t == [] and counts["contaminated_en"] == 1


def test_protected_keys_ignores_meta_train_and_empty_lines() -> None:
    texts = [
        pt(["Hallo Welt"], ["Hello world"], role="meta-train"),
        pt([" Bună  ziua ", ""], ["Good  day", "   "], role="test", lang="ro"),
        pt(["Mulțumesc"], ["Thank you"], role="adapt", lang="ro"),
        pt(["Da"], ["Yes"], role="adapt-valid", lang="ro"),
        pt(["Nu"], ["No"], role="adapt-extra", lang="ro"),
    ]
    src_keys, en_keys = protected_keys(texts)
    assert src_keys == {"Bună ziua", "Mulțumesc", "Da", "Nu"}
    assert en_keys == {"Good day", "Thank you", "Yes", "No"}
    assert "Hello world" not in en_keys and "" not in en_keys
