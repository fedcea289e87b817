"""`mtmeta evaluate`: translate a language's test set and score it."""
from __future__ import annotations

import time
from pathlib import Path

from data_prep.prepare import read_protected
from evaluation.scoring import score, write_json
from .checkpoint import load_bundle
from .decoding import translate


def evaluate_checkpoint(
    checkpoint: str,
    lang: str,
    data: str,
    output_dir: str | Path,
    test: str | None = None,
    beam: int = 4,
    batch_sentences: int = 64,
    max_sentences: int = 0,
    progress: bool = True,
) -> dict:
    """Translate the prepared test set of `lang` with `checkpoint`, write the
    hypotheses and a JSON of scores into output_dir; return the scores."""
    text = read_protected(data, lang, "test", test or None)
    src, refs = text.src, text.tgt
    if max_sentences:
        src, refs = src[:max_sentences], refs[:max_sentences]
    bundle, _ = load_bundle(checkpoint)
    bundle.model.fold_embeddings()  # ULR -> plain tables: same output, cheaper
    t0 = time.time()
    hyps = translate(bundle, lang, src, beam=beam, batch_sentences=batch_sentences, progress=progress)
    seconds = time.time() - t0
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    hyp_path = out / f"{lang}-en.{text.name}.hyp"
    tmp = hyp_path.with_name(hyp_path.name + ".tmp")
    tmp.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    tmp.replace(hyp_path)
    result = {
        "lang": lang,
        "test": text.name,
        "checkpoint": str(checkpoint),
        "hypotheses": str(hyp_path),
        "references": str(Path(text.origin).with_suffix(".en")),
        "beam": beam,
        "translate_seconds": round(seconds, 1),
        **score(hyps, refs),
    }
    write_json(result, out / f"{lang}-en.{text.name}.json")
    return result
