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
from data_prep.vocab import N_SPECIAL, train_vocab
from .checkpoint import Bundle
from .config import AdaptConfig
from .errors import ConfigError


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
    dictionary = adapt_dictionary(cfg.dictionary, cfg.data, lang) if not cfg.random_queries or cfg.anchor_queries != "none" else None
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
            dictionary=dictionary,
            en_vocab=bundle.tgt_vocab,
            dictionary_projection=cfg.dictionary_projection,
        )
        queries = torch.from_numpy(al.vectors)
        info["alignment"] = al.report
        log(
            f"{lang}: ULR queries aligned with a {al.report['dictionary_pairs']}-pair dictionary, "
            f"precision@1 {al.report['precision_at_1']:.3f} on held-out pairs"
        )
    if cfg.anchor_queries != "none":
        if not dictionary:
            raise ConfigError(f"anchor_queries {cfg.anchor_queries!r} needs a dictionary for {lang!r} (--dictionary FILE)")
        queries, info["anchors"] = anchor_queries(
            queries, vocab, bundle.tgt_vocab, embed, dictionary, identical=cfg.anchor_queries == "dictionary+identical"
        )
        a = info["anchors"]
        log(
            f"{lang}: {a['dictionary'] + a['identical']} ULR queries anchored on universal tokens "
            f"({a['dictionary']} by dictionary, {a['identical']} identical), attention on the target "
            f"{a['target_mass_before']:.3f} -> {a['target_mass_after']:.3f}"
        )
    embed.add_language(lang, len(vocab), queries=queries)
    return info


# Identical spelling anchors words of at least this many characters (names,
# shared words: '▁Australia', '▁transport') and pieces without letters
# (numbers, punctuation); shorter ones ('▁a', '▁de', '▁la', '▁un' in ro) are
# mostly function words or word beginnings that only look English.
IDENTICAL_MIN_CHARS = 3


def anchor_queries(queries: torch.Tensor, vocab, en_vocab, embed, pairs: list[tuple[str, str]], identical: bool = False
                   ) -> tuple[torch.Tensor, dict]:
    """Dictionary-anchored ULR queries: a whole-word piece ('▁casa') whose
    word has translations in `pairs` that are universal tokens ('▁house')
    gets the query q with q A = c * (mean key of those translations), so its
    attention softmax(q A K^T / tau) lands on them; q solved by least
    squares through the learned A, c the median |q A| of the language's
    other queries. `identical`: also pieces spelled like a universal token
    (whole-word pieces of IDENTICAL_MIN_CHARS or more characters, and
    pieces without letters: names, numbers, punctuation), unless the
    dictionary lists their word. Every other query is kept. Returns
    (queries, counts and the mean attention on the targets before/after)."""
    from data_prep.dictionaries import group

    queries = queries.clone().float()
    A, keys = embed.A.detach().float().cpu(), embed.keys.float().cpu()
    key_of = {int(e): j for j, e in enumerate(embed.key_ids.tolist())}
    en_index = {p: i for i, p in enumerate(en_vocab.pieces())}

    def universal(piece: str) -> int | None:
        i = en_index.get(piece)
        return key_of.get(i) if i is not None and i >= N_SPECIAL else None

    translations = group(pairs)
    targets: dict[int, list[int]] = {}
    n_dict = n_ident = 0
    for i, piece in enumerate(vocab.pieces()):
        if i < N_SPECIAL:
            continue
        word = piece[1:] if piece.startswith("\u2581") else None
        if word and word.lower() in translations:
            title = word[:1].isupper() and word[1:].islower()
            found = []
            for t in translations[word.lower()]:
                j = (universal("\u2581" + t[:1].upper() + t[1:]) if title else None)
                j = j if j is not None else universal("\u2581" + t)
                if j is not None and j not in found:
                    found.append(j)
            if found:
                targets[i] = found
                n_dict += 1
            continue  # the dictionary knows this word: never anchored by its spelling
        if identical and (len(word or "") >= IDENTICAL_MIN_CHARS or not any(c.isalpha() for c in piece)):
            j = universal(piece)
            if j is not None:
                targets[i] = [j]
                n_ident += 1
    info = {"dictionary": n_dict, "identical": n_ident, "target_mass_before": float("nan"), "target_mass_after": float("nan")}
    if not targets:
        return queries, info
    rows = torch.tensor(sorted(targets))
    others = torch.ones(len(queries), dtype=torch.bool)
    others[:N_SPECIAL] = False
    others[rows] = False
    norms = (queries[others] @ A).norm(dim=1)
    norms = norms[norms > 0]
    scale = float(norms.median()) if len(norms) else 1.0
    goal = torch.stack([keys[targets[int(i)]].mean(0) for i in rows])
    goal = goal / goal.norm(dim=1, keepdim=True).clamp_min(1e-8) * scale
    q = torch.linalg.lstsq(A.T, goal.T).solution.T  # q A = goal
    hit = torch.zeros(len(rows), len(keys))
    for k, i in enumerate(rows.tolist()):
        hit[k, targets[i]] = 1.0

    def mass(q: torch.Tensor) -> float:  # mean attention on each row's target keys
        return float((torch.softmax(q @ A @ keys.T / embed.tau, -1) * hit).sum(1).mean())

    info["target_mass_before"] = round(mass(queries[rows]), 4)
    queries[rows] = q
    info["target_mass_after"] = round(mass(q), 4)
    info["qa_norm"] = round(scale, 4)
    return queries, info
