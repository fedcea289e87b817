"""Binarised parallel data, token-budget batches and collation.

On disk (written by data_prep.prepared.save_pairs) each split is one .npz: concatenated token ids plus lengths, ids local
to the language's own vocabulary (the model maps them to its global table,
so data never depends on which other languages a model knows).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_prep.prepared import save_pairs  # noqa: F401 (the writer of this format)
from data_prep.vocab import BOS, EOS, N_SPECIAL, PAD
from .errors import DataError


@dataclass
class PairData:
    """Token ids of one language pair split, without EOS."""

    src: list[np.ndarray]
    tgt: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.src)

    def num_tokens(self) -> int:
        return int(sum(len(s) for s in self.src) + sum(len(t) for t in self.tgt))

    @classmethod
    def from_lists(cls, src: list[list[int]], tgt: list[list[int]]) -> "PairData":
        return cls([np.asarray(s, dtype=np.int64) for s in src], [np.asarray(t, dtype=np.int64) for t in tgt])

    @classmethod
    def load(cls, path: str | Path) -> "PairData":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: prepared data not found (run `mtmeta prepare` first)")
        try:
            with np.load(path) as z:
                src, src_len, tgt, tgt_len = (z[k] for k in ("src", "src_len", "tgt", "tgt_len"))
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
            raise DataError(f"{path}: unreadable prepared data ({e}); delete it and re-run `mtmeta prepare`") from None
        if src_len.sum() != len(src) or tgt_len.sum() != len(tgt) or len(src_len) != len(tgt_len):
            raise DataError(f"{path}: prepared data is inconsistent; delete it and re-run `mtmeta prepare`")
        src_split = np.split(src.astype(np.int64), np.cumsum(src_len)[:-1]) if len(src_len) else []
        tgt_split = np.split(tgt.astype(np.int64), np.cumsum(tgt_len)[:-1]) if len(tgt_len) else []
        return cls(list(src_split), list(tgt_split))


def make_batches(data: PairData, max_tokens: int, max_len: int) -> list[np.ndarray]:
    """Token-budget batches of similar-length pairs (padded size of source
    and target each <= max_tokens). Pairs longer than max_len are skipped."""
    from fairseq.data import data_utils

    src_len = np.array([len(s) + 1 for s in data.src], dtype=np.int64)
    tgt_len = np.array([len(t) + 1 for t in data.tgt], dtype=np.int64)
    sizes = np.maximum(src_len, tgt_len)
    keep = np.nonzero(sizes <= max_len)[0]
    order = keep[np.lexsort((src_len[keep], tgt_len[keep]))]
    if len(order) and sizes[order].max() > max_tokens:
        raise DataError(
            f"max_tokens {max_tokens} is below the longest sentence pair ({int(sizes[order].max())} tokens with EOS, "
            f"up to max_positions {max_len}); raise max_tokens (--max-tokens) or lower model.max_positions"
        )
    batches = data_utils.batch_by_size(order, lambda i: int(sizes[i]), num_tokens_vec=sizes[order], max_tokens=max_tokens)
    return [np.asarray(b, dtype=np.int64) for b in batches]


def collate(data: PairData, indices, src_offset: int = 0) -> dict:
    """Pad a batch the fairseq way: source and target end with EOS, the
    decoder input is EOS + target[:-1]. `src_offset` moves the language's
    local ids into the model's global source table (specials stay put)."""
    srcs = [_with_eos(data.src[i]) for i in indices]
    tgts = [_with_eos(data.tgt[i]) for i in indices]
    src_tokens = _pad(srcs)
    if src_offset:
        src_tokens = torch.where(src_tokens >= N_SPECIAL, src_tokens + src_offset, src_tokens)
    target = _pad(tgts)
    prev = _pad([np.concatenate(([EOS], t[:-1])) for t in tgts])
    return {
        "net_input": {
            "src_tokens": src_tokens,
            "src_lengths": torch.tensor([len(s) for s in srcs]),
            "prev_output_tokens": prev,
        },
        "target": target,
        "ntokens": int(sum(len(t) for t in tgts)),
        "nsentences": len(srcs),
    }


def collate_source(src_ids: list[list[int]], src_offset: int = 0) -> dict:
    """Source-only batch for decoding."""
    srcs = [_with_eos(np.asarray(s, dtype=np.int64)) for s in src_ids]
    tokens = _pad(srcs)
    if src_offset:
        tokens = torch.where(tokens >= N_SPECIAL, tokens + src_offset, tokens)
    return {"net_input": {"src_tokens": tokens, "src_lengths": torch.tensor([len(s) for s in srcs])}}


def _with_eos(ids: np.ndarray) -> np.ndarray:
    return np.concatenate((ids, [EOS])).astype(np.int64)


def _pad(seqs: list[np.ndarray]) -> torch.Tensor:
    """Right-padded, as fairseq's encoder and decoder expect here."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.from_numpy(s)
    return out


__all__ = ["BOS", "EOS", "PAD", "PairData", "collate", "collate_source", "make_batches", "save_pairs"]
