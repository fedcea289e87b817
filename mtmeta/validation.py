"""Validation: per-token loss on held-out pairs and BLEU/chrF of greedy
translations, and the single score that selects checkpoints."""
from __future__ import annotations

import copy
import math

import torch

from data_prep.prepare import read_protected
from .config import AdaptConfig
from .languages import add_language
from .scoring import score
from .tasks import Task
from .data import PairData, collate, make_batches
from .decoding import translate_ids
from .engine import sequence_loss
from .hardware import model_device, to_device


class Validator:
    """`sets`: language -> held-out PairData (local ids). BLEU is computed
    on up to `bleu_sentences` pairs spread over the languages."""

    def __init__(self, sets: dict[str, PairData], bleu_sentences: int, select: str = "loss", max_tokens: int = 4000):
        self.sets = {k: v for k, v in sets.items() if len(v)}
        self.bleu_sentences = bleu_sentences
        self.select = select
        self.max_tokens = max_tokens

    def __call__(self, engine) -> dict:
        return self.evaluate(engine.bundle)

    def evaluate(self, bundle) -> dict:
        total_nll, total_tok = 0.0, 0
        device = model_device(bundle.model)  # validation runs in fp32 whatever the training precision
        for lang, data in self.sets.items():
            offset = bundle.src_offset(lang)
            for idx in make_batches(data, self.max_tokens, bundle.model.cfg.max_positions):
                batch = to_device(collate(data, idx, offset), device)
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


class MetaValidator:
    """MetaNMT's meta-validation: fine-tune a copy of the model for a few
    steps on a validation language's adapt set, then score that copy on the
    language's validation set. The language then no longer counts as unseen."""

    def __init__(self, data: str, lang: str, steps: int, sentences: int, select: str, lr: float, max_tokens: int = 2000, seed: int = 1):
        self.data, self.lang, self.steps, self.sentences = data, lang, steps, sentences
        self.select, self.lr, self.max_tokens, self.seed = select, lr, max_tokens, seed
        self.train_text = read_protected(data, lang, "adapt")
        self.valid_text = read_protected(data, lang, "adapt-valid")
        self._new_language = None  # (vocab, ULR queries or None), made once: they depend on fixed vectors only

    def _add_language(self, bundle) -> None:
        embed = bundle.model.src_embed
        if self._new_language is not None:
            vocab, inputs = self._new_language
            bundle.src_vocabs[self.lang] = vocab
            embed.add_language(self.lang, len(vocab), **inputs)
            return
        # The settings meta-validation has always used (2,000 pieces): MetaNMT runs select on it
        cfg = AdaptConfig(lang=self.lang, data=self.data, seed=self.seed, vector_epochs=5, src_vocab_size=2000)
        if add_language(bundle, cfg, self.train_text, log=lambda *_: None)["vocabulary"] == "new":
            self._new_language = (bundle.src_vocabs[self.lang], embed.language_inputs(self.lang))

    def __call__(self, engine) -> dict:
        bundle = copy.deepcopy(engine.bundle)
        with torch.random.fork_rng():  # training's random stream is left as it was
            torch.manual_seed(self.seed)  # the new table starts the same at every validation
            return self._fine_tune_and_score(bundle)

    def _fine_tune_and_score(self, bundle) -> dict:
        self._add_language(bundle)
        vocab = bundle.src_vocab(self.lang)
        train = PairData.from_lists(vocab.encode_batch(self.train_text.src), bundle.tgt_vocab.encode_batch(self.train_text.tgt))
        valid = PairData.from_lists(vocab.encode_batch(self.valid_text.src), bundle.tgt_vocab.encode_batch(self.valid_text.tgt))
        task = Task(self.lang, train, bundle.src_offset(self.lang), self.max_tokens, bundle.model.cfg.max_positions, self.seed)
        model = bundle.model
        task.device = model_device(model)
        opt = torch.optim.Adam([p for p in model.parameters()], lr=self.lr)
        model.train()
        with torch.enable_grad():
            for _ in range(self.steps):
                batch = task.next_batch()
                opt.zero_grad(set_to_none=True)
                loss, _ = sequence_loss(model, batch, 0.1)
                (loss / batch["ntokens"]).backward()
                opt.step()
        model.eval()
        metrics = Validator({self.lang: valid}, self.sentences, self.select, self.max_tokens).evaluate(bundle)
        return {f"meta_{k}" if k != "score" else k: v for k, v in metrics.items()} | {"meta_valid_lang": self.lang}
