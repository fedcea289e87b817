"""`mtmeta adapt`: fine-tune a pre-trained model on a new language's small
parallel set (or train on it from scratch, the baseline).

A language the model has never seen gets its own sentencepiece vocabulary,
trained on the adapt set's source side, and a fresh embedding table; nothing
else about the model or the other languages changes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from data_prep import sources
from data_prep.cleaning import normalize_protected
from data_prep.corpus import ParallelText
from data_prep.prepare import read_protected
from data_prep.vocab import Vocab, train_vocab
from .checkpoint import Bundle, load_bundle
from .config import AdaptConfig
from .data import PairData
from .engine import Engine, EngineSettings
from .errors import ConfigError
from .model import build_model
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


def add_language(bundle: Bundle, lang: str, train_src: list[str], vocab_size: int, seed: int, log=print) -> str:
    """Make `lang` encodable: reuse what the model has, or give it a new
    vocabulary and table. Returns how it was handled."""
    embed = bundle.model.src_embed
    if lang in embed.lang_table:
        return "known"
    if "src" in embed.tables:  # joint source vocabulary: the new language shares it
        embed.add_language(lang, None, table="src")
        return "joint"
    vocab = train_vocab(train_src, lang, vocab_size, seed)
    embed.add_language(lang, len(vocab))
    bundle.src_vocabs[lang] = vocab
    log(f"{lang}: new source vocabulary of {len(vocab)} pieces from {len(train_src)} sentences")
    return "new"


def adapt(cfg: AdaptConfig, log=print, progress: bool = True, resume: bool = True) -> dict:
    cfg.validate()
    train_text, valid_text = load_adapt_texts(cfg)
    if cfg.checkpoint:
        bundle, _ = load_bundle(cfg.checkpoint)
        start = cfg.checkpoint
    else:
        en, _, _ = load_prepared_vocabs(cfg.data, [])
        bundle = Bundle(build_model(cfg.model, len(en), {}), en, {})
        start = "scratch"
    how = add_language(bundle, cfg.lang, train_text.src, cfg.src_vocab_size, cfg.seed, log)
    vocab = bundle.src_vocab(cfg.lang)
    encode = lambda t: PairData.from_lists(vocab.encode_batch(t.src), bundle.tgt_vocab.encode_batch(t.tgt))  # noqa: E731
    train_data, valid_data = encode(train_text), encode(valid_text)
    max_len = bundle.model.cfg.max_positions
    task = Task(cfg.lang, train_data, bundle.src_offset(cfg.lang), cfg.max_tokens, max_len, cfg.seed)
    tune = cfg.tune if cfg.checkpoint else "all"
    strategy = FineTuneStrategy(TaskSampler({cfg.lang: task}, 1.0, cfg.seed), tune=tune)
    validator = Validator({cfg.lang: valid_data}, cfg.bleu_sentences, select=cfg.select_metric, max_tokens=cfg.max_tokens)
    log(
        f"adapting to {cfg.lang} from {start} ({how} vocabulary; tuning {tune}): "
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
    return {**result, "best": str(engine.best_path), "last": str(engine.last_path)}
