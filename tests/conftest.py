"""Shared fixtures: the minipack corpus, one prepared folder, one tiny
pre-trained checkpoint and its adaptation to Romanian (each built once per
session, everything under pytest's tmp dirs, never under work/)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mtmeta import config as C

# This machine has 2 cores and usually a training job beside the tests:
# torch's default of one thread per core makes tiny models several times
# slower through oversubscription.
torch.set_num_threads(1)

MINIPACK = Path(__file__).resolve().parent / "fixtures" / "minipack"

SRC_VOCAB = 250
TGT_VOCAB = 400
ADAPT_VOCAB = 200
MAX_TOKENS = 400


def quiet(*_args, **_kw) -> None:
    pass


def tiny_model() -> C.ModelConfig:
    return dataclasses.replace(C.MODEL_PRESETS["tiny"])


def prepare_config(output: Path, **changes) -> C.PrepareConfig:
    cfg = C.PrepareConfig(
        sources=[C.SourceSpec(type="pack", path=str(MINIPACK))],
        output=str(output),
        src_vocab_size=SRC_VOCAB,
        joint_vocab_size=300,
        tgt_vocab_size=TGT_VOCAB,
        valid_per_lang=20,
    )
    return dataclasses.replace(cfg, **changes)


def train_config(data: Path, output: Path, **changes) -> C.TrainConfig:
    cfg = C.TrainConfig(
        data=str(data),
        output=str(output),
        strategy="multitask",
        model=tiny_model(),
        max_steps=12,
        validate_every=6,
        save_every=0,
        bleu_sentences=4,
        max_tokens=MAX_TOKENS,
        warmup_steps=4,
        log_every=1000,
    )
    return dataclasses.replace(cfg, **changes)


def adapt_config(checkpoint: Path | str, data: Path, output: Path, **changes) -> C.AdaptConfig:
    cfg = C.AdaptConfig(
        checkpoint=str(checkpoint),
        lang="ro",
        data=str(data),
        output=str(output),
        src_vocab_size=ADAPT_VOCAB,
        max_tokens=MAX_TOKENS,
        max_steps=6,
        validate_every=3,
        bleu_sentences=4,
        warmup_steps=2,
        patience=0,
        log_every=1000,
    )
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="session")
def minipack() -> Path:
    assert (MINIPACK / "MANIFEST.tsv").is_file(), MINIPACK
    return MINIPACK


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, minipack) -> Path:
    from data_prep.prepare import prepare

    out = tmp_path_factory.mktemp("prep") / "prepared"
    prepare(prepare_config(out), log=quiet)
    assert (out / "summary.json").is_file()
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, prepared) -> Path:
    from mtmeta.training import train

    out = tmp_path_factory.mktemp("train") / "multitask"
    torch.manual_seed(0)
    result = train(train_config(prepared, out), log=quiet, progress=False, resume=False)
    assert result["step"] == 12
    best = Path(result["best"])
    assert best.is_file()
    return best


@pytest.fixture(scope="session")
def adapted_checkpoint(tmp_path_factory, prepared, tiny_checkpoint) -> Path:
    from mtmeta.adaptation import adapt

    out = tmp_path_factory.mktemp("adapt") / "adapt-ro"
    torch.manual_seed(0)
    result = adapt(adapt_config(tiny_checkpoint, prepared, out), log=quiet, progress=False, resume=False)
    assert result["step"] == 6
    best = Path(result["best"])
    assert best.is_file()
    return best
