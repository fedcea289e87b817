"""Translation with fairseq's beam search (the native engine).

What both engines (this one and CTranslate2, mtmeta.export) share lives
here too, so they decode the same batches under the same bounds:

* inputs longer than the model's positions are cut, with one warning on
  stderr per call;
* sentences are sorted by length and cut into batches of `batch_sentences`,
  so padding stays small and every member of a batch has a similar length;
* the output length is bounded per sentence: at most
  `int(max_len_a * source pieces + max_len_b)` target pieces, and never more
  than `max_positions - 2` (the decoder's positions, its start token and the
  EOS). A batch decodes up to the bound of its longest member; each
  hypothesis is then cut to its own bound, so a degenerate model that never
  ends a sentence gives ~1.5x the source, not the 254-piece limit.
  (fairseq's own max_len_a/b apply to the padded batch width *including*
  EOS; here the bound is computed from each sentence's own pieces.)
* progress: a tqdm bar on a terminal, plain lines on stderr otherwise.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Iterable

import torch

from data_prep.vocab import EOS
from .checkpoint import Bundle
from .data import collate_source

MAX_LEN_A = 1.5  # target pieces per source piece
MAX_LEN_B = 10  # plus this many
PROGRESS_EVERY_FRACTION = 0.1  # non-TTY lines: at each 10% of the sentences...
PROGRESS_EVERY_SECONDS = 30.0  # ... or after this long without a line
LONG_DECODE_SECONDS = 60.0  # progress="long": silent until a decode runs this long


# --- what both engines share ---------------------------------------------------


def max_source_pieces(max_positions: int) -> int:
    """Source pieces the encoder reads (its last position holds EOS)."""
    return max_positions - 1


def max_output_len(src_pieces: int, max_positions: int, max_len_a: float = MAX_LEN_A, max_len_b: int = MAX_LEN_B) -> int:
    """Target pieces (EOS not counted) allowed for a source of `src_pieces`
    pieces (EOS not counted): a*src+b, at least 1, at most max_positions-2."""
    return max(1, min(int(max_len_a * src_pieces + max_len_b), max_positions - 2))


_warned: set[str] = set()  # progress="long" (validation): warn once per process and language


def cut_inputs(ids: list[list[int]], max_positions: int, what: str = "translate", progress: bool | str = True) -> list[list[int]]:
    """Source ids cut to what the encoder reads, with one warning on stderr
    when anything was cut (a 5,000-word line is not silently read as 127
    pieces). The warning follows `progress`: none when False (--quiet),
    once per process for each `what` when "long" (validation)."""
    limit = max_source_pieces(max_positions)
    out = [list(s) for s in ids]
    long = [len(s) for s in out if len(s) > limit]
    warn = progress is True or (progress == "long" and what not in _warned)
    if long and warn:
        _warned.add(what)
        print(
            f"mtmeta: warning: {what}: {len(long)} of {len(out)} input sentences are longer than the model reads "
            f"({max(long)} source pieces at most; limit {limit}, max_positions {max_positions}) and were cut to {limit} pieces",
            file=sys.stderr,
            flush=True,
        )
    return [s[:limit] for s in out] if long else out


def length_batches(ids: list[list[int]], batch_sentences: int) -> list[list[int]]:
    """Indices of `ids` in batches of similar length (sorted, shortest
    first; ties keep input order). Empty inputs are left out: an empty
    line translates to an empty line (in both engines)."""
    if batch_sentences < 1:
        raise ValueError("batch_sentences must be >= 1")
    order = sorted((i for i in range(len(ids)) if len(ids[i])), key=lambda i: len(ids[i]))
    return [order[i : i + batch_sentences] for i in range(0, len(order), batch_sentences)]


def strip_output(tokens: Iterable[int], bound: int) -> list[int]:
    """A hypothesis's target ids without EOS, cut to its length bound."""
    out = []
    for t in tokens:
        t = int(t)
        if t == EOS:
            break
        out.append(t)
    return out[:bound]


class Progress:
    """Sentences translated so far, where a person can see them.

    mode True: a tqdm bar when stderr is a terminal, else a plain line on
    stderr at each 10% of the sentences or after 30 s without one, and a
    last line with the rate. mode "long": plain lines only, and only once
    the decode has run LONG_DECODE_SECONDS (validation during training).
    mode False: nothing."""

    def __init__(self, total: int, desc: str, mode: bool | str = True, stream=None):
        self.total, self.desc, self.done = total, desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last_line = time.perf_counter()
        self.next_mark = PROGRESS_EVERY_FRACTION
        self.printed = False
        self.bar = None
        self.lines = False
        self.quiet_until = 0.0
        if not mode or total <= 0:
            return
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if mode is True and tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="sent", leave=False, file=self.stream, dynamic_ncols=True)
        else:
            self.lines = True
            self.quiet_until = LONG_DECODE_SECONDS if mode == "long" else 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.lines:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        if elapsed < self.quiet_until:
            return
        fraction = self.done / self.total
        if fraction >= 1.0:
            return  # close() says it
        if fraction >= self.next_mark or now - self.last_line >= PROGRESS_EVERY_SECONDS or not self.printed and self.quiet_until:
            self._line(elapsed)
            self.next_mark = (math.floor(fraction / PROGRESS_EVERY_FRACTION) + 1) * PROGRESS_EVERY_FRACTION
            self.last_line = now

    def _line(self, elapsed: float, final: bool = False) -> None:
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.done}/{self.total} sentences ({100 * self.done / self.total:.0f}%), {rate:.1f} sentences/s, {_clock(elapsed)}"
        if not final and rate > 0:
            text += f", about {_clock((self.total - self.done) / rate)} left"
        print(text, file=self.stream, flush=True)
        self.printed = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.lines:
            elapsed = time.perf_counter() - self.start
            if elapsed >= self.quiet_until or self.printed:
                self._line(elapsed, final=True)
            self.lines = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    m, s = divmod(s, 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


# --- the native engine -------------------------------------------------------------


@torch.no_grad()
def translate(
    bundle: Bundle,
    lang: str,
    sentences: list[str],
    beam: int = 4,
    batch_sentences: int = 64,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    progress: bool | str = False,
    hw=None,
) -> list[str]:
    """Detokenised English for each source sentence, in input order.
    Sentences are batched by length so padding stays small. `hw` (a
    mtmeta.hardware.Hardware): device and autocast; None: the model's own
    device, fp32."""
    if not sentences:
        return []
    ids = bundle.src_vocab(lang).encode_batch(sentences)
    return translate_ids(bundle, lang, ids, beam, batch_sentences, max_len_a, max_len_b, progress, hw)


@torch.no_grad()
def translate_ids(
    bundle: Bundle,
    lang: str,
    ids: list[list[int]],
    beam: int = 4,
    batch_sentences: int = 64,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    progress: bool | str = "long",
    hw=None,
) -> list[str]:
    """Like `translate`, from source ids local to the language's vocabulary.
    (Validation calls this: its default progress is "long", i.e. quiet
    unless the decode takes more than a minute.)"""
    return [bundle.tgt_vocab.decode(t) for t in generate_ids(bundle, lang, ids, beam, batch_sentences, max_len_a, max_len_b, progress, hw)]


@torch.no_grad()
def generate_ids(
    bundle: Bundle,
    lang: str,
    ids: list[list[int]],
    beam: int = 4,
    batch_sentences: int = 64,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    progress: bool | str = False,
    hw=None,
) -> list[list[int]]:
    """Target ids (no EOS) of the best hypothesis for each source, in input order."""
    from fairseq.sequence_generator import SequenceGenerator

    from .hardware import to_device

    if not ids:
        return []
    offset = bundle.src_offset(lang)
    model = bundle.model
    max_positions = model.cfg.max_positions
    if hw is not None:
        model.to(hw.device)
        device = hw.device
    else:
        device = next(model.parameters()).device
    autocast = hw.autocast() if hw is not None else _null()
    was_training = model.training
    model.eval()
    ids = cut_inputs(ids, max_positions, f"translate {lang}", progress)
    generator = SequenceGenerator(
        [model],
        model.decoder.dictionary,
        beam_size=beam,
        max_len_a=0,
        max_len_b=1,  # set per batch below
        max_len=max_positions - 1,  # fairseq caps at max_len - 1 = max_positions - 2
    )
    out: list[list[int]] = [[] for _ in ids]
    try:
        with Progress(len(ids), f"translate {lang}", progress) as bar, autocast:
            bar.update(sum(1 for s in ids if not s))  # empty lines: nothing to translate
            for batch in length_batches(ids, batch_sentences):
                bounds = [max_output_len(len(ids[i]), max_positions, max_len_a, max_len_b) for i in batch]
                generator.max_len_b = max(bounds)
                sample = to_device(collate_source([ids[i] for i in batch], offset), device)
                hypos = generator.generate([model], sample)
                for i, bound, h in zip(batch, bounds, hypos):
                    out[i] = strip_output(h[0]["tokens"].tolist(), bound)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return out


def _null():
    import contextlib

    return contextlib.nullcontext()


def read_input(lines: Iterable[str]) -> list[str]:
    return [line.rstrip("\r\n") for line in lines]


__all__ = [
    "MAX_LEN_A", "MAX_LEN_B", "Progress", "cut_inputs", "generate_ids", "length_batches", "max_output_len",
    "max_source_pieces", "read_input", "strip_output", "translate", "translate_ids",
]
