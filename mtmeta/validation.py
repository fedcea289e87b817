"""Validation: per-token loss on held-out pairs and BLEU/chrF of greedy
translations, and the single score that selects checkpoints."""
from __future__ import annotations

import math

import torch

from evaluation.scoring import score
from .data import PairData, collate, make_batches
from .decoding import translate_ids
from .engine import sequence_loss


class Validator:
    """`sets`: language -> held-out PairData (local ids). BLEU is computed
    on up to `bleu_sentences` pairs spread over the languages."""

    def __init__(self, sets: dict[str, PairData], bleu_sentences: int, select: str = "loss", max_tokens: int = 4000):
        self.sets = {k: v for k, v in sets.items() if len(v)}
        self.bleu_sentences = bleu_sentences
        self.select = select
        self.max_tokens = max_tokens

    def __call__(self, engine) -> dict:
        bundle = engine.bundle
        total_nll, total_tok = 0.0, 0
        for lang, data in self.sets.items():
            offset = bundle.src_offset(lang)
            for idx in make_batches(data, self.max_tokens, bundle.model.cfg.max_positions):
                batch = collate(data, idx, offset)
                _, nll = sequence_loss(bundle.model, batch, 0.0)
                total_nll += nll.item()
                total_tok += batch["ntokens"]
        metrics = {}
        if total_tok:
            metrics["valid_nll"] = total_nll / total_tok
            metrics["valid_ppl"] = math.exp(min(20.0, metrics["valid_nll"]))
        if self.bleu_sentences and self.sets:
            per_lang = max(1, self.bleu_sentences // len(self.sets))
            hyps, refs = [], []
            for lang, data in self.sets.items():
                n = min(per_lang, len(data))
                hyps += translate_ids(bundle, lang, [d.tolist() for d in data.src[:n]], beam=1)
                refs += [bundle.tgt_vocab.decode(t.tolist()) for t in data.tgt[:n]]
            s = score(hyps, refs)
            metrics["bleu"], metrics["chrf"] = s["bleu"], s["chrf"]
        if self.select == "loss":
            metrics["score"] = -metrics.get("valid_nll", math.inf)
        else:
            metrics["score"] = metrics.get(self.select, -math.inf)
        return metrics
