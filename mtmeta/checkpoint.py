"""Self-contained checkpoints of plain state.

A checkpoint holds only tensors, numbers, strings and bytes (the
sentencepiece models), so it loads with torch's `weights_only=True`: no
pickled classes, no argparse/omegaconf objects, nothing that runs code on
load. It is written to a temporary file and renamed, so a kill mid-write
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from data_prep.vocab import Vocab
from .config import ModelConfig, from_dict
from .errors import CheckpointError, ConfigError, MtmetaError
from .model import MultilingualTransformer
from .safe_io import atomic_save

FORMAT = 1


@dataclass
class Bundle:
    """A model with the vocabularies it reads and writes."""

    model: MultilingualTransformer
    tgt_vocab: Vocab
    src_vocabs: dict[str, Vocab]  # by source table name

    def languages(self) -> list[str]:
        return self.model.src_embed.languages()

    def src_vocab(self, lang: str) -> Vocab:
        table = self.model.src_embed.lang_table.get(lang)
        if table is None:
            raise ConfigError(
                f"the model does not know source language {lang!r} (knows: {', '.join(self.languages())}); "
                f"adapt it first with `mtmeta adapt --lang {lang}`"
            )
        return self.src_vocabs[table]

    def src_offset(self, lang: str) -> int:
        self.src_vocab(lang)
        return self.model.src_embed.offset(lang)


def save_checkpoint(path: str | Path, bundle: Bundle, **extra) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(bundle.model.cfg),
        "layout": bundle.model.layout(),
        "model": bundle.model.state_dict(),
        "tgt_vocab": bundle.tgt_vocab.proto,
        "src_vocabs": {name: v.proto for name, v in bundle.src_vocabs.items()},
        **extra,
    }
    # torch.save into <path>.tmp (same bytes as before), fsync, rename; a full disk is one
    # line naming the file (torch itself says only "unexpected pos 64 vs 0") and the
    # previous checkpoint stays as it was.
    atomic_save(path, lambda tmp: torch.save(state, tmp), "checkpoint", needed_bytes=_nbytes(state))


def _nbytes(x) -> int:
    """About how many bytes torch.save writes for `x` (to tell a full disk)."""
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(_nbytes(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    return len(x) if isinstance(x, bytes) else 0


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {msg})") from None
    except Exception as e:  # weights_only refuses anything but plain state
        raise CheckpointError(f"{path}: refused to load ({type(e).__name__}); mtmeta checkpoints hold plain state only") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{path}: not an mtmeta checkpoint (format {state.get('format') if isinstance(state, dict) else '?'})")
    return state


def bundle_from_state(state: dict, path: str | Path = "checkpoint") -> Bundle:
    cfg = from_dict(ModelConfig, state["model_config"])
    model = MultilingualTransformer.from_layout(cfg, state["layout"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the recorded model ({str(e).splitlines()[0]})") from None
    try:
        tgt = Vocab(state["tgt_vocab"], "en")
        src = {name: Vocab(proto, name) for name, proto in state["src_vocabs"].items()}
    except MtmetaError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return Bundle(model, tgt, src)


def read_model_state(path: str | Path) -> dict:
    """A checkpoint file's state, or a release folder's (mtmeta/release.py:
    verified against its manifest, weights as float32, no training state).
    Training's resume reads last.pt with read_checkpoint, never a release."""
    from .release import is_release, read_release

    return read_release(path) if is_release(path) else read_checkpoint(path)


def load_bundle(path: str | Path) -> tuple[Bundle, dict]:
    """The model of a checkpoint file or a release folder, and its state."""
    state = read_model_state(path)
    return bundle_from_state(state, path), state
