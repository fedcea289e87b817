"""`mtmeta adapt`: fine-tune a pre-trained model on a new language's small
parallel set (or train on it from scratch, the baseline).

A language the model has never seen gets its own sentencepiece vocabulary,
trained on the adapt set's source side, and a fresh embedding table; nothing
else about the model or the other languages changes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from data_prep import sources
from data_prep.cleaning import normalize, normalize_protected
from data_prep.corpus import ParallelText
from data_prep.prepare import load_ulr_vectors, read_protected
from data_prep.vectors import align_language
from data_prep.vocab import train_vocab
from .checkpoint import Bundle, load_bundle, save_checkpoint
from .config import AdaptConfig
from .data import PairData
from .engine import Engine, EngineSettings
from .errors import ConfigError
from .model import build_model
from .model.ulr import UniversalLexicalEmbedding
from .strategies import FineTuneStrategy
from .tasks import Task, TaskSampler
from .training import load_prepared_vocabs
from .validation import Validator


def load_adapt_texts(cfg: AdaptConfig) -> tuple[ParallelText, ParallelText]:
    """The adapt and validation sets: from plain files when given, else from
    the prepared folder."""
    if cfg.train_files:
        if len(cfg.train_files) != 2 or len(cfg.valid_files) != 2:
            raise ConfigError("train_files and valid_files each take two paths: source side, English side")
        train = sources.load_plain_files(*cfg.train_files, lang=cfg.lang, role="adapt")
        valid = sources.load_plain_files(*cfg.valid_files, lang=cfg.lang, role="adapt-valid")
        return normalize_protected(train), normalize_protected(valid)
    return read_protected(cfg.data, cfg.lang, "adapt"), read_protected(cfg.data, cfg.lang, "adapt-valid")


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
    if not isinstance(embed, UniversalLexicalEmbedding):
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
        )
        queries = torch.from_numpy(al.vectors)
        info["alignment"] = al.report
        log(
            f"{lang}: ULR queries aligned with a {al.report['dictionary_pairs']}-pair dictionary, "
            f"precision@1 {al.report['precision_at_1']:.3f} on held-out pairs"
        )
    embed.add_language(lang, len(vocab), queries=queries)
    return info


def adapt(cfg: AdaptConfig, log=print, progress: bool = True, resume: bool = True) -> dict:
    cfg.validate()
    train_text, valid_text = load_adapt_texts(cfg)
    if cfg.checkpoint:
        bundle, _ = load_bundle(cfg.checkpoint)
        start = cfg.checkpoint
    else:
        en, _, _ = load_prepared_vocabs(cfg.data, [])
        ulr = load_ulr_vectors(cfg.data) if cfg.model.embedding == "ulr" else None
        torch.manual_seed(cfg.seed)
        bundle = Bundle(build_model(cfg.model, len(en), {}, ulr=ulr), en, {})
        start = "scratch"
    added = add_language(bundle, cfg, train_text, log)
    vocab = bundle.src_vocab(cfg.lang)
    encode = lambda t: PairData.from_lists(vocab.encode_batch(t.src), bundle.tgt_vocab.encode_batch(t.tgt))  # noqa: E731
    train_data, valid_data = encode(train_text), encode(valid_text)
    max_len = bundle.model.cfg.max_positions
    task = Task(cfg.lang, train_data, bundle.src_offset(cfg.lang), cfg.max_tokens, max_len, cfg.seed)
    if cfg.zero_shot:  # nothing to train: the new vocabulary (and queries) is the adaptation
        path = Path(cfg.output) / "best.pt"
        save_checkpoint(path, bundle, run_config={"kind": "adapt", **dataclasses.asdict(cfg)}, history=[], added=added)
        log(f"zero-shot model for {cfg.lang} -> {path}")
        return {"step": 0, "tokens": 0, "minutes": 0.0, "best_score": float("nan"), "best": str(path), "last": str(path), "added": added}
    tune = cfg.tune if cfg.checkpoint else "all"
    strategy = FineTuneStrategy(TaskSampler({cfg.lang: task}, 1.0, cfg.seed), tune=tune)
    validator = Validator({cfg.lang: valid_data}, cfg.bleu_sentences, select=cfg.select_metric, max_tokens=cfg.max_tokens)
    log(
        f"adapting to {cfg.lang} from {start} ({added['vocabulary']} vocabulary; tuning {tune}): "
        f"{len(train_data)} training pairs, {len(valid_data)} validation pairs"
    )
    engine = Engine(
        bundle,
        strategy,
        EngineSettings.from_config(cfg),
        cfg.output,
        validate=validator,
        run_config={"kind": "adapt", **dataclasses.asdict(cfg)},
        log=log,
        progress=progress,
    )
    result = engine.run(resume=resume)
    log(f"adapted {result['step']} steps in {result['minutes']:.1f} min; best {cfg.select_metric} {result['best_score']:.2f} -> {engine.best_path}")
    return {**result, "best": str(engine.best_path), "last": str(engine.last_path), "added": added}
