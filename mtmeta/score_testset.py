"""`mtmeta evaluate`: translate a language's test set and score it."""
from __future__ import annotations

import time
from pathlib import Path

from data_prep.prepare import read_protected
from .scoring import score, write_json
from .decoding import translate
from .errors import ConfigError


def evaluate_checkpoint(
    checkpoint: str,
    lang: str,
    data: str,
    output_dir: str | Path,
    test: str | None = None,
    beam: int = 4,
    batch_sentences: int = 64,
    max_sentences: int = 0,
    progress: bool | str = True,
    engine: str = "native",
    compute_type: str = "auto",
    hw=None,
) -> dict:
    """Translate the prepared test set of `lang` with `checkpoint`, write the
    hypotheses and a JSON of scores into output_dir; return the scores.

    engine "native": `checkpoint` is an mtmeta checkpoint, decoded with
    fairseq on `hw` (mtmeta.hardware.Hardware; None: CPU, fp32).
    engine "ctranslate2": `checkpoint` is a folder written by `mtmeta export`,
    decoded by CTranslate2 with `compute_type`."""
    if engine not in ("native", "ctranslate2"):
        raise ConfigError(f"engine {engine!r} unknown (native, ctranslate2)")
    text = read_protected(data, lang, "test", test or None)
    src, refs = text.src, text.tgt
    if max_sentences:
        src, refs = src[:max_sentences], refs[:max_sentences]
    if engine == "ctranslate2":
        from .export import open_export

        model = open_export(checkpoint, compute_type=compute_type)  # a non-export: one clear error, before decoding
        model.src_vocab(lang)
        run = lambda: model.translate(lang, src, beam=beam, batch_sentences=batch_sentences, progress=progress)  # noqa: E731
        settings = {"engine": engine, "compute_type": model.compute_type, "device": model.device}
    else:
        from .checkpoint import load_bundle

        bundle, _ = load_bundle(checkpoint)
        bundle.src_vocab(lang)
        bundle.model.fold_embeddings()  # ULR -> plain tables: same output, cheaper
        run = lambda: translate(bundle, lang, src, beam=beam, batch_sentences=batch_sentences, progress=progress, hw=hw)  # noqa: E731
        settings = {"engine": engine}
        if hw is not None:
            settings.update(device=str(hw.device), precision="bf16" if hw.bf16 else "fp32")
    t0 = time.time()
    hyps = run()
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
        **settings,
        "translate_seconds": round(seconds, 1),
        **score(hyps, refs),
    }
    write_json(result, out / f"{lang}-en.{text.name}.json")
    return result
