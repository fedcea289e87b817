"""`mtmeta train`: pre-training on the source language pairs (multitask, or
transfer from one parent pair), on the one engine."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from data_prep.prepare import load_ulr_vectors
from data_prep.prepared import load_prepared_vocabs, load_summary
from . import distributed, hardware
from .checkpoint import Bundle
from .config import TrainConfig
from .data import PairData
from .engine import Engine
from .errors import ConfigError
from .model import build_model
from .model.transformer import needs_vectors
from .strategies import pretrain_strategy
from .tasks import Task
from .validation import Validator


def select_langs(cfg: TrainConfig, summary: dict) -> list[str]:
    available = summary["train_langs"]
    langs = pretrain_strategy(cfg.strategy).train_langs(cfg, available)
    unknown = [lang for lang in langs if lang not in available]
    if unknown:
        raise ConfigError(f"{cfg.data} has no training data for {unknown} (prepared: {', '.join(available)})")
    return langs


def check_train(cfg: TrainConfig) -> None:
    """The whole train section, the strategy name included (before any work)."""
    cfg.validate()
    pretrain_strategy(cfg.strategy)


def train(cfg: TrainConfig, log=print, progress: bool = True, resume: bool = True) -> dict:
    check_train(cfg)
    hw = hardware.setup(cfg.device, cfg.precision, cfg.threads)  # impossible settings fail before any work
    # Under torchrun: join the other workers (no-op in a single process). Each rank draws
    # its own batches (rank_seed; rank 0's are the single-process ones); only rank 0 logs.
    rank, _ = distributed.init_from_env()
    if hw.device.type == "cuda":  # under torchrun, init_from_env picked this worker's GPU
        hw = dataclasses.replace(hw, device=torch.device("cuda", torch.cuda.current_device()))
    if rank != 0:
        log = lambda *_: None  # noqa: E731
    log(f"train: {hw.describe()}")
    summary = load_summary(cfg.data)
    langs = select_langs(cfg, summary)
    en, src_vocabs, joint = load_prepared_vocabs(cfg.data, langs)
    torch.manual_seed(cfg.seed)  # the seed decides the initial weights
    model = build_model(
        cfg.model,
        len(en),
        {lang: len(src_vocabs["src" if joint else lang]) for lang in langs},
        joint=joint,
        ulr=load_ulr_vectors(cfg.data) if needs_vectors(cfg.model) else None,
    )
    bundle = Bundle(model, en, src_vocabs)
    counts = model.count_parameters()
    log(
        f"{cfg.strategy}: {len(langs)} language(s), model {sum(counts.values()) / 1e6:.1f}M parameters "
        f"({(counts['encoder'] + counts['decoder']) / 1e6:.1f}M encoder+decoder, {counts['src_embed'] / 1e6:.1f}M source embeddings)"
    )
    data_dir = Path(cfg.data) / "data"
    tasks = {
        lang: Task(
            lang,
            PairData.load(data_dir / f"{lang}-en" / "train.npz"),
            bundle.src_offset(lang),
            cfg.max_tokens,
            cfg.model.max_positions,
            distributed.rank_seed(cfg.seed, rank),  # distributed: per-rank batch order
        )
        for lang in langs
    }
    strategy_cls = pretrain_strategy(cfg.strategy)
    strategy = strategy_cls.build(cfg, tasks, model, distributed.rank_seed(cfg.seed, rank))
    valid = {lang: PairData.load(data_dir / f"{lang}-en" / "valid.npz") for lang in langs}
    validator = strategy_cls.validator(cfg, Validator(valid, cfg.bleu_sentences, select=cfg.select_metric, max_tokens=cfg.max_tokens))
    engine = Engine(
        bundle,
        strategy,
        cfg,
        cfg.output,
        validate=validator,
        run_config={"kind": "train", **dataclasses.asdict(cfg)},
        log=log,
        progress=progress,
        hardware=hw,
    )
    result = engine.run(resume=resume)
    log(f"trained {result['step']} steps, {result['tokens']} target tokens in {result['minutes']:.1f} min -> {engine.best_path}")
    return {**result, "best": str(engine.best_path), "last": str(engine.last_path)}
