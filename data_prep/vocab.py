"""Subword vocabularies (sentencepiece).

Ids follow fairseq's Dictionary convention (bos=0, pad=1, eos=2, unk=3) so a
sentencepiece id *is* the fairseq dictionary index: no remapping anywhere.
"""
from __future__ import annotations

import io
import random
import logging
from pathlib import Path

import sentencepiece as spm

from mtmeta.errors import DataError

BOS, PAD, EOS, UNK = 0, 1, 2, 3
N_SPECIAL = 4

logging.getLogger("sentencepiece").setLevel(logging.ERROR)


class Vocab:
    """A sentencepiece model held in memory (serialisable to bytes, so
    checkpoints are self-contained)."""

    def __init__(self, model_proto: bytes, lang: str):
        self.lang = lang
        self.proto = bytes(model_proto)
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
        except Exception as e:  # sentencepiece raises RuntimeError / OSError on a corrupt model
            raise DataError(f"sentencepiece model for {lang!r} is corrupt ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
        if self.sp.pad_id() != PAD or self.sp.eos_id() != EOS or self.sp.unk_id() != UNK:
            raise DataError(f"sentencepiece model for {lang!r} does not use fairseq special ids")

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) >= N_SPECIAL])

    def pieces(self) -> list[str]:
        return [self.sp.id_to_piece(i) for i in range(len(self))]

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.proto)

    @classmethod
    def load(cls, path: str | Path, lang: str) -> "Vocab":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file not found")
        return cls(path.read_bytes(), lang)

    def fairseq_dictionary(self):
        """A fairseq Dictionary whose indices equal this model's ids."""
        from fairseq.data import Dictionary

        d = Dictionary()
        for i in range(N_SPECIAL, len(self)):
            d.add_symbol(self.sp.id_to_piece(i), n=1)
        assert len(d) == len(self)
        return d


def train_vocab(sentences: list[str], lang: str, vocab_size: int, seed: int = 1, max_sentences: int = 300_000) -> Vocab:
    """Train a unigram sentencepiece model. The size is a soft limit: small
    corpora (an 800-sentence adapt set) get what they can support."""
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise DataError(f"no text to train the {lang!r} vocabulary on")
    if len(sentences) > max_sentences:
        # Our own seeded sample: sentencepiece's input sampling does not follow its seed
        # in every process, which gave a new English vocabulary on each run of prepare.
        sentences = random.Random(seed).sample(sentences, max_sentences)
    model = io.BytesIO()
    # Fixed seed: the same corpus gives the same vocabulary on every machine.
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        # Small corpora keep every character (an 800-sentence set would
        # otherwise lose rare punctuation to <unk>).
        character_coverage=1.0 if len(sentences) < 100_000 else 0.9999,
        bos_id=BOS,
        pad_id=PAD,
        eos_id=EOS,
        unk_id=UNK,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=False,  # already sampled above
        num_threads=2,
        minloglevel=2,
    )
    return Vocab(model.getvalue(), lang)
