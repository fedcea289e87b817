"""Translation with fairseq's beam search."""
from __future__ import annotations

from typing import Iterable

import sys

import torch
from fairseq.sequence_generator import SequenceGenerator
from tqdm.auto import tqdm

from .checkpoint import Bundle
from .data import collate_source


@torch.no_grad()
def translate(
    bundle: Bundle,
    lang: str,
    sentences: list[str],
    beam: int = 4,
    batch_sentences: int = 64,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    progress: bool = False,
) -> list[str]:
    """Detokenised English for each source sentence, in input order.
    Sentences are batched by length so padding stays small."""
    if not sentences:
        return []
    ids = bundle.src_vocab(lang).encode_batch(sentences)
    return translate_ids(bundle, lang, ids, beam, batch_sentences, max_len_a, max_len_b, progress)


@torch.no_grad()
def translate_ids(
    bundle: Bundle,
    lang: str,
    ids: list[list[int]],
    beam: int = 4,
    batch_sentences: int = 64,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    progress: bool = False,
) -> list[str]:
    """Like `translate`, from source ids local to the language's vocabulary."""
    offset = bundle.src_offset(lang)
    model = bundle.model
    was_training = model.training
    model.eval()
    max_src = model.cfg.max_positions - 1
    ids = [list(s)[:max_src] for s in ids]
    generator = SequenceGenerator(
        [model],
        model.decoder.dictionary,
        beam_size=beam,
        max_len_a=max_len_a,
        max_len_b=max_len_b,
        max_len=model.cfg.max_positions - 2,
    )
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    batches = [order[i : i + batch_sentences] for i in range(0, len(order), batch_sentences)]
    for batch_idx in tqdm(batches, disable=not (progress and sys.stderr.isatty()), desc=f"translate {lang}", leave=False):
        sample = collate_source([ids[i] if ids[i] else [] for i in batch_idx], offset)
        hypos = generator.generate([model], sample)
        for i, h in zip(batch_idx, hypos):
            out[i] = bundle.tgt_vocab.decode(h[0]["tokens"].tolist())
    model.train(was_training)
    return out


def read_input(lines: Iterable[str]) -> list[str]:
    return [line.rstrip("\r\n") for line in lines]
