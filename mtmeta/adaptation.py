"""`mtmeta adapt`: fine-tune a pre-trained model on a new language's small
parallel set (or train on it from scratch, the baseline).

A language the model has never seen gets its own sentencepiece vocabulary,
trained on the adapt set's source side, and a fresh embedding table; nothing
else about the model or the other languages changes.

Against forgetting the source languages (`regularizer: l2 | ewc`), the
fine-tuning loss gets a quadratic pull toward the pre-trained parameters
(mtmeta/regularizers.py); EWC's Fisher is estimated on the prepared
training data of the source languages the checkpoint knows. With
`forgetting_lang`, one source language's held-out set is scored before
adapting and with the best adapted checkpoint (OUTPUT/forgetting.json).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from data_prep import sources
from data_prep.cleaning import drop_empty_pairs, normalize, normalize_protected
from data_prep.corpus import ParallelText
from data_prep.dictionaries import adapt_dictionary
from data_prep.prepare import load_ulr_vectors, read_protected
from data_prep.prepared import load_prepared_vocabs
from .scoring import write_json
from .checkpoint import Bundle, load_bundle, save_checkpoint
from .config import AdaptConfig
from .data import PairData
from .engine import Engine
from .errors import ConfigError
from . import hardware
from .languages import add_language
from .model import build_model
from .model.transformer import needs_vectors
from .regularizers import EWC, L2Prior, anchor_parameters, estimate_fisher, parameter_distance, tuned_names
from .strategies import FineTuneStrategy, select_parameters
from .tasks import Task, TaskSampler
from .validation import Validator


def load_adapt_texts(cfg: AdaptConfig) -> tuple[ParallelText, ParallelText]:
    """The adapt and validation sets: from plain files when given, else from
    the prepared folder."""
    if cfg.train_files:
        if len(cfg.train_files) != 2 or len(cfg.valid_files) != 2:
            raise ConfigError("train_files and valid_files each take two paths: source side, English side")
        train = sources.load_plain_files(*cfg.train_files, lang=cfg.lang, role="adapt")
        valid = sources.load_plain_files(*cfg.valid_files, lang=cfg.lang, role="adapt-valid")
        # The one reader (data_prep.sources.read_lines); pairs with an empty side are dropped
        # and said, as prepare drops them from training text.
        return drop_empty_pairs(normalize_protected(train)), drop_empty_pairs(normalize_protected(valid))
    return read_protected(cfg.data, cfg.lang, "adapt"), read_protected(cfg.data, cfg.lang, "adapt-valid")


def with_dictionary(train: ParallelText, cfg: AdaptConfig, log=print) -> ParallelText:
    """The adapt set plus `cfg.dictionary_training` copies of each pair of
    the language's dictionary (the one its ULR alignment reads) as one-word
    sentence pairs: 800 sentences leave ~26% of ro validation words unseen;
    the dictionary's 5,000 frequent words reach some of them, and a word pair
    also teaches the new vocabulary's pieces their meaning directly."""
    if not cfg.dictionary_training:
        return train
    pairs = adapt_dictionary(cfg.dictionary, cfg.data, cfg.lang)
    if not pairs:
        log(f"{cfg.lang}: no dictionary found: adapting on the {len(train):,} sentence pairs alone")
        return train
    words = [(normalize(s), normalize(e)) for s, e in pairs] * cfg.dictionary_training
    log(f"{cfg.lang}: {len(train):,} sentence pairs + {len(words):,} dictionary word pairs")
    return dataclasses.replace(train, src=train.src + [s for s, _ in words], tgt=train.tgt + [e for _, e in words])


# --- source languages: forgetting report and EWC data ----------------------------


def _prepared_vocabs_match(cfg: AdaptConfig, bundle: Bundle, lang: str) -> bool:
    """Whether the prepared folder's ids for `lang` (and English) are the
    checkpoint's: its .npz files hold ids local to those vocabularies."""
    en, src, joint = load_prepared_vocabs(cfg.data, [lang])
    return en.proto == bundle.tgt_vocab.proto and src["src" if joint else lang].proto == bundle.src_vocab(lang).proto


def _source_split(cfg: AdaptConfig, bundle: Bundle, lang: str, split: str, what: str) -> PairData:
    """data/<lang>-en/<split>.npz of a source language the checkpoint knows,
    checked to be encoded with the checkpoint's vocabularies."""
    known = [x for x in bundle.languages() if x != cfg.lang]
    if lang == cfg.lang or lang not in bundle.languages():
        raise ConfigError(
            f"{what} {lang!r} is not a source language of {cfg.checkpoint} (knows: {', '.join(known) or 'none'})"
        )
    path = Path(cfg.data) / "data" / f"{lang}-en" / f"{split}.npz"
    if not path.is_file():
        raise ConfigError(f"{what} {lang!r}: no held-out data {path} (a prepared folder with {lang}-en is needed: --data)")
    if not _prepared_vocabs_match(cfg, bundle, lang):
        raise ConfigError(
            f"{what} {lang!r}: {cfg.data} was prepared with other vocabularies than {cfg.checkpoint}; "
            "use the prepared folder the model was trained on"
        )
    data = PairData.load(path)
    if not len(data):
        raise ConfigError(f"{what} {lang!r}: {path} holds no sentence pairs")
    return data


def score_language(bundle: Bundle, lang: str, data: PairData, sentences: int, max_tokens: int) -> dict:
    """Per-token NLL and greedy BLEU/chrF of `bundle` on held-out `data`
    (BLEU on the first `sentences` pairs)."""
    validator = Validator({lang: data}, sentences, select="loss", max_tokens=max_tokens)
    model = bundle.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            metrics = validator(SimpleNamespace(bundle=bundle))
    finally:
        model.train(was_training)
    metrics.pop("score", None)
    return metrics


def fisher_source_batches(cfg: AdaptConfig, bundle: Bundle, log=print):
    """`cfg.fisher_batches` training batches of the source languages the
    checkpoint knows and the prepared folder has (same vocabularies), taken
    round-robin over the languages in each one's seeded shuffled order."""
    data_dir = Path(cfg.data) / "data"
    if not (Path(cfg.data) / "summary.json").is_file():
        raise ConfigError(f"regularizer ewc estimates the Fisher on the source languages' training data: {cfg.data} is not a prepared folder (--data)")
    langs, skipped = [], []
    for lang in bundle.languages():
        if lang == cfg.lang or not (data_dir / f"{lang}-en" / "train.npz").is_file():
            continue
        (langs if _prepared_vocabs_match(cfg, bundle, lang) else skipped).append(lang)
    if skipped:
        log(f"EWC: skipping {', '.join(skipped)}: prepared with other vocabularies than the checkpoint")
    if not langs:
        raise ConfigError(
            f"regularizer ewc: {cfg.data} has no training data for any source language of {cfg.checkpoint} "
            f"(knows: {', '.join(x for x in bundle.languages() if x != cfg.lang)}); use the prepared folder it was trained on"
        )
    max_len = bundle.model.cfg.max_positions
    tasks = []
    for lang in langs:
        try:
            tasks.append(Task(lang, PairData.load(data_dir / f"{lang}-en" / "train.npz"), bundle.src_offset(lang), cfg.max_tokens, max_len, cfg.seed))
        except ValueError:  # empty, or nothing fits max_tokens
            continue
        tasks[-1].device = hardware.model_device(bundle.model)
    if not tasks:
        raise ConfigError(f"regularizer ewc: no source-language training batch fits max_tokens={cfg.max_tokens}")
    return langs, [tasks[i % len(tasks)].next_batch() for i in range(cfg.fisher_batches)]


def build_regularizer(cfg: AdaptConfig, bundle: Bundle, anchor: dict, log=print):
    """L2Prior or EWC over the anchored parameters being tuned (the new
    language's table has no anchor entry, so it is free)."""
    names = [n for n in tuned_names(bundle.model) if n in anchor]
    anchor = {n: anchor[n] for n in names}
    if cfg.regularizer == "l2":
        reg = L2Prior(anchor, cfg.reg_lambda)
        log(f"L2 prior toward the pre-trained parameters: lambda {cfg.reg_lambda:g}, {len(names)} tensors")
        return reg
    langs, batches = fisher_source_batches(cfg, bundle, log)
    fisher = estimate_fisher(bundle.model, batches, names, normalize=True)
    reg = EWC(bundle.model, fisher, anchor, cfg.reg_lambda)
    reg.source_langs = langs
    log(
        f"EWC: diagonal Fisher from {len(batches)} batches of {', '.join(langs)} (normalised to mean 1); "
        f"lambda {cfg.reg_lambda:g}, {len(names)} tensors"
    )
    return reg


def _forgetting_report(cfg: AdaptConfig, data: PairData, before: dict, best: Path, log=print) -> dict:
    after_bundle, state = load_bundle(best)
    n = min(len(data), cfg.bleu_sentences or len(data))
    after = score_language(after_bundle, cfg.forgetting_lang, data, n, cfg.max_tokens)
    report = {
        "lang": cfg.forgetting_lang,
        "sentences": n,
        "before": before,
        "after": after,
        "change": {k: after[k] - before[k] for k in ("bleu", "chrf", "valid_nll") if k in before and k in after},
        "before_checkpoint": cfg.checkpoint,
        "after_checkpoint": str(best),
        "after_step": int(state.get("train_state", {}).get("step", 0)),
    }
    write_json(report, Path(cfg.output) / "forgetting.json")
    log(
        f"forgetting ({cfg.forgetting_lang}, {n} held-out sentences): BLEU {before.get('bleu', float('nan')):.2f} -> "
        f"{after.get('bleu', float('nan')):.2f}, chrF {before.get('chrf', float('nan')):.2f} -> {after.get('chrf', float('nan')):.2f}"
    )
    return report


def adapt(
    cfg: AdaptConfig,
    log=print,
    progress: bool = True,
    resume: bool = True,
    texts: tuple[ParallelText, ParallelText] | None = None,
) -> dict:
    """`texts`: (adapt, validation) sets given directly, e.g. a subset drawn
    by `mtmeta compare`; otherwise they come from `cfg`."""
    cfg.validate()
    t_start, cpu_start = time.time(), time.process_time()  # wall and CPU: the split holds on a loaded machine too
    hw = hardware.setup(cfg.device, cfg.precision, cfg.threads)  # impossible settings fail before any work
    log(f"adapt: {hw.describe()}")
    torch.manual_seed(cfg.seed)  # the new language's table starts the same on every run
    if cfg.regularizer == "ewc" and cfg.fisher_batches < 1:
        raise ConfigError("regularizer ewc needs fisher_batches >= 1")
    if cfg.forgetting_lang and not cfg.checkpoint:
        raise ConfigError("forgetting_lang measures what a pre-trained model forgets: it needs a checkpoint")
    train_text, valid_text = texts if texts is not None else load_adapt_texts(cfg)
    sentences = len(train_text)
    train_text = with_dictionary(train_text, cfg, log)
    if cfg.checkpoint:
        bundle, _ = load_bundle(cfg.checkpoint)
        start = cfg.checkpoint
    else:
        en, _, _ = load_prepared_vocabs(cfg.data, [])
        ulr = load_ulr_vectors(cfg.data) if needs_vectors(cfg.model) else None
        torch.manual_seed(cfg.seed)
        bundle = Bundle(build_model(cfg.model, len(en), {}, ulr=ulr), en, {})
        start = "scratch"
    forget_data = _source_split(cfg, bundle, cfg.forgetting_lang, "valid", "forgetting_lang") if cfg.forgetting_lang else None
    # theta*: the pre-trained parameters, before the new language adds any
    anchor = anchor_parameters(bundle.model) if cfg.regularizer != "none" and not cfg.zero_shot else None
    added = add_language(bundle, cfg, train_text, log)
    added["dictionary_training_pairs"] = len(train_text) - sentences
    bundle.model.to(hw.device)
    if anchor is not None:
        anchor = {n: a.to(hw.device) for n, a in anchor.items()}
    before = None
    if forget_data is not None:
        n = min(len(forget_data), cfg.bleu_sentences or len(forget_data))
        before = score_language(bundle, cfg.forgetting_lang, forget_data, n, cfg.max_tokens)
    vocab = bundle.src_vocab(cfg.lang)
    encode = lambda t: PairData.from_lists(vocab.encode_batch(t.src), bundle.tgt_vocab.encode_batch(t.tgt))  # noqa: E731
    train_data, valid_data = encode(train_text), encode(valid_text)
    max_len = bundle.model.cfg.max_positions
    task = Task(cfg.lang, train_data, bundle.src_offset(cfg.lang), cfg.max_tokens, max_len, cfg.seed)
    if cfg.zero_shot:  # nothing to train: the new vocabulary (and queries) is the adaptation
        path = Path(cfg.output) / "best.pt"
        save_checkpoint(path, bundle, run_config={"kind": "adapt", **dataclasses.asdict(cfg)}, history=[], added=added)
        log(f"zero-shot model for {cfg.lang} -> {path}")
        result = {"step": 0, "tokens": 0, "minutes": 0.0, "best_score": float("nan"), "best": str(path), "last": str(path), "added": added}
        if before is not None:
            result["forgetting"] = _forgetting_report(cfg, forget_data, before, path, log)
        return result
    tune = cfg.tune if cfg.checkpoint else "all"
    regularizer = None
    if anchor is not None:
        select_parameters(bundle.model, tune)  # what the engine will tune: only that is regularised
        regularizer = build_regularizer(cfg, bundle, anchor, log)
    strategy = FineTuneStrategy(TaskSampler({cfg.lang: task}, 1.0, cfg.seed), tune=tune, regularizer=regularizer)
    validator = Validator({cfg.lang: valid_data}, cfg.bleu_sentences, select=cfg.select_metric, max_tokens=cfg.max_tokens)
    log(
        f"adapting to {cfg.lang} from {start} ({added['vocabulary']} vocabulary; tuning {tune}): "
        f"{len(train_data)} training pairs, {len(valid_data)} validation pairs"
    )
    # Where adaptation's time goes (result["timing"]): setup = load, vocabulary, ULR alignment.
    timing = {"setup_seconds": time.time() - t_start, "setup_cpu_seconds": time.process_time() - cpu_start,
              "validations": 0, "validation_seconds": 0.0, "validation_cpu_seconds": 0.0}

    def timed_validation(engine) -> dict:
        wall, cpu = time.time(), time.process_time()
        try:
            return validator(engine)
        finally:
            timing["validations"] += 1
            timing["validation_seconds"] += time.time() - wall
            timing["validation_cpu_seconds"] += time.process_time() - cpu

    engine = Engine(
        bundle,
        strategy,
        cfg,
        cfg.output,
        validate=timed_validation,
        run_config={"kind": "adapt", **dataclasses.asdict(cfg)},
        log=log,
        progress=progress,
        hardware=hw,
    )
    result = engine.run(resume=resume)
    log(f"adapted {result['step']} steps in {result['minutes']:.1f} min; best {cfg.select_metric} {result['best_score']:.2f} -> {engine.best_path}")
    timing.update(seconds=time.time() - t_start, cpu_seconds=time.process_time() - cpu_start)
    result = {**result, "best": str(engine.best_path), "last": str(engine.last_path), "added": added,
              "timing": {k: round(v, 1) if isinstance(v, float) else v for k, v in timing.items()}}
    if regularizer is not None:
        info = regularizer.describe()
        if getattr(regularizer, "source_langs", None):
            info["source_langs"] = regularizer.source_langs
            info["fisher_batches"] = cfg.fisher_batches
        with torch.no_grad():
            info["final_penalty"] = float(regularizer.penalty(engine.model))
        info["final_distance"] = parameter_distance(engine.model, regularizer.anchor)
        result["regularizer"] = info
    if before is not None:
        result["forgetting"] = _forgetting_report(cfg, forget_data, before, engine.best_path, log)
    return result
