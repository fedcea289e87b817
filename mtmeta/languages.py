"""Adding a source language to a model: `add_language` gives a language the
model has never seen its own vocabulary (trained on its adapt set) and
whatever its source embedding needs for a new language (mtmeta/model/
embeddings.py; ULR: query vectors aligned to English). Used by adaptation
and by MetaNMT's meta-validation."""
from __future__ import annotations

import torch

from data_prep import sources
from data_prep.cleaning import normalize
from data_prep.corpus import ParallelText
from data_prep.dictionaries import adapt_dictionary
from data_prep.vectors import align_language
from data_prep.vocab import train_vocab
from .checkpoint import Bundle
from .config import AdaptConfig


def add_language(bundle: Bundle, cfg: AdaptConfig, train: ParallelText, log=print) -> dict:
    """Make `cfg.lang` encodable: reuse what the model has, or give it a new
    vocabulary and table (with ULR: query vectors aligned to English from
    the adapt set and any monolingual text). Returns what was done."""
    embed = bundle.model.src_embed
    lang = cfg.lang
    if lang in embed.lang_table:
        return {"vocabulary": "known"}
    if "src" in embed.tables:  # joint source vocabulary: the new language shares it
        embed.add_language(lang, None, table="src")
        return {"vocabulary": "joint"}
    mono = [normalize(x) for f in cfg.mono_files for x in sources.read_lines(f) if x.strip()]
    vocab = train_vocab(train.src + mono, lang, cfg.src_vocab_size, cfg.seed)
    bundle.src_vocabs[lang] = vocab
    info = {"vocabulary": "new", "pieces": len(vocab)}
    log(f"{lang}: new source vocabulary of {len(vocab)} pieces from {len(train.src) + len(mono)} sentences")
    if not embed.needs_queries:
        embed.add_language(lang, len(vocab))
        return info
    if cfg.random_queries:
        g = torch.Generator().manual_seed(cfg.seed)
        queries = torch.nn.functional.normalize(torch.randn(len(vocab), embed.query_dim, generator=g), dim=-1)
        info["queries"] = "random"
    else:
        al = align_language(
            vocab,
            vocab.encode_batch(train.src),
            bundle.tgt_vocab.encode_batch(train.tgt),
            embed.en_vectors.numpy(),
            embed.query_dim,
            cfg.vector_epochs,
            cfg.seed,
            max_sentences=50000,
            mono_ids=vocab.encode_batch(mono) if mono else None,
            vec_file=cfg.vector_file,
            min_count=2,
            dictionary=adapt_dictionary(cfg.dictionary, cfg.data, lang),
            en_vocab=bundle.tgt_vocab,
            dictionary_projection=cfg.dictionary_projection,
        )
        queries = torch.from_numpy(al.vectors)
        info["alignment"] = al.report
        log(
            f"{lang}: ULR queries aligned with a {al.report['dictionary_pairs']}-pair dictionary, "
            f"precision@1 {al.report['precision_at_1']:.3f} on held-out pairs"
        )
    embed.add_language(lang, len(vocab), queries=queries)
    return info
