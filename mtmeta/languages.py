"""Adding a source language to a model: `add_language` gives a language the
model has never seen its own vocabulary (trained on its adapt set) and
whatever its source embedding needs for a new language (mtmeta/model/
embeddings.py; ULR: query vectors aligned to English). Used by adaptation
and by MetaNMT's meta-validation."""
from __future__ import annotations

from collections import Counter

import torch

from data_prep import sources
from data_prep.cleaning import normalize
from data_prep.corpus import ParallelText
from data_prep.dictionaries import adapt_dictionary
from data_prep.vectors import align_language
from data_prep.vocab import N_SPECIAL, train_vocab
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
    if cfg.cognate_queries > 0:
        counts = Counter(i for s in vocab.encode_batch(train.src + mono) for i in s)
        queries, info["cognates"] = cognate_queries(
            queries, vocab, bundle, lang, cfg.cognate_queries, cfg.cognate_langs, counts, cfg.cognate_count_scale
        )
        c = info["cognates"]
        log(
            f"{lang}: {c['pieces']} ULR queries borrowed (w {cfg.cognate_queries:g}"
            + (f", count scale {cfg.cognate_count_scale:g}, mean w {c['mean_weight']:.3f}" if cfg.cognate_count_scale > 0 else "")
            + f") from pieces spelled the same in {', '.join(f'{k} {v}' for k, v in c['per_language'].items())}"
            + f" ({c['mean_languages_per_piece']:.1f} languages per piece)"
        )
    embed.add_language(lang, len(vocab), queries=queries)
    return info


def source_overlap(vocab, bundle: Bundle, lang: str) -> dict[str, int]:
    """How many of `vocab`'s pieces each other source language's vocabulary
    spells exactly (its own table's queries), most first."""
    embed = bundle.model.src_embed
    mine = set(vocab.pieces()[N_SPECIAL:])
    out = {}
    for other in embed.languages():
        table = embed.lang_table[other]
        if other == lang or table == embed.lang_table.get(lang) or table not in embed.queries:
            continue
        out[other] = len(mine & set(bundle.src_vocabs[table].pieces()[N_SPECIAL:]))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def cognate_queries(queries: torch.Tensor, vocab, bundle: Bundle, lang: str, weight: float, langs: int = 0,
                    counts: dict[int, int] | None = None, count_scale: float = 0.0, min_chars: int = 1
                    ) -> tuple[torch.Tensor, dict]:
    """Borrow queries from source languages that spell a piece the same way:
    a piece of the new language ('▁militar', 'ție') found in the vocabulary
    of one or more pre-trained source languages gets
        q = normalize((1 - w) q_aligned + w mean_l normalize(q_l(piece)))
    with q_l the query the model was pre-trained with for that piece in
    language l. `langs` > 0: only the `langs` source languages that share
    the most pieces with the new vocabulary (ro: es fr it pt); 0: all.
    `count_scale` > 0: w_i = weight * s / (s + count_i), count_i the piece's
    count in the new language's text (rare pieces have the worst aligned
    vectors), needs `counts`. `min_chars`: pieces with fewer characters
    (without '▁') keep their aligned query. Returns (queries, report)."""
    embed = bundle.model.src_embed
    overlap = source_overlap(vocab, bundle, lang)
    chosen = list(overlap)[:langs] if langs > 0 else list(overlap)
    pieces = vocab.pieces()
    out = queries.clone().float()
    sums = torch.zeros_like(out)
    n_from = torch.zeros(len(out))
    per_lang = {}
    for other in chosen:
        table = embed.lang_table[other]
        index = {p: i for i, p in enumerate(bundle.src_vocabs[table].pieces()) if i >= N_SPECIAL}
        theirs = embed.queries[table].weight.detach().float().cpu()
        rows = [(i, index[p]) for i, p in enumerate(pieces) if i >= N_SPECIAL and p in index and len(p.lstrip("\u2581")) >= min_chars]
        if not rows:
            continue
        mine, other_rows = torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])
        sums[mine] += torch.nn.functional.normalize(theirs[other_rows], dim=-1)
        n_from[mine] += 1
        per_lang[other] = len(rows)
    hit = (n_from > 0).nonzero().flatten()
    report = {"pieces": int(len(hit)), "languages": chosen, "per_language": per_lang, "weight": weight,
              "mean_languages_per_piece": round(float(n_from[hit].mean()), 2) if len(hit) else 0.0}
    if not len(hit):
        return out, report
    w = torch.full((len(hit),), float(weight))
    if count_scale > 0:
        c = torch.tensor([float((counts or {}).get(int(i), 0)) for i in hit])
        w = w * count_scale / (count_scale + c)
        report["mean_weight"] = round(float(w.mean()), 3)
    borrowed = sums[hit] / n_from[hit].unsqueeze(1)
    norm = out[hit].norm(dim=1, keepdim=True).clamp_min(1e-8)  # keep each piece's query length (unit here)
    before = out[hit]
    mixed = (1 - w).unsqueeze(1) * before / norm + w.unsqueeze(1) * torch.nn.functional.normalize(borrowed, dim=-1)
    out[hit] = torch.nn.functional.normalize(mixed, dim=-1) * norm
    report["cosine_before"] = round(float(torch.nn.functional.cosine_similarity(before, borrowed).mean()), 3)
    return out, report
