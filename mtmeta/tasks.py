"""Tasks (one per source language pair) and how batches are drawn from them.

Every random choice comes from a generator whose state is part of the
checkpoint, so a resumed run draws exactly the batches it would have drawn.
"""
from __future__ import annotations

import zlib

import numpy as np

import torch

from .data import PairData, collate, make_batches


class Task:
    """One language pair: its data, token-budget batches and a resumable
    position in an endless shuffled stream of those batches."""

    def __init__(self, lang: str, data: PairData, src_offset: int, max_tokens: int, max_len: int, seed: int):
        self.lang = lang
        self.data = data
        self.src_offset = src_offset
        self.batches = make_batches(data, max_tokens, max_len)
        if not self.batches:
            raise ValueError(f"{lang}: no batch fits max_tokens={max_tokens}")
        self.seed = seed
        self.device = torch.device("cpu")  # where next_batch puts its tensors
        self.epoch = 0
        self.position = 0
        self.last_batch = -1
        self._order = self._permutation()

    def __len__(self) -> int:
        return len(self.data)

    @property
    def num_tokens(self) -> int:
        return self.data.num_tokens()

    def _permutation(self) -> np.ndarray:
        key = [self.seed, zlib.crc32(self.lang.encode()), self.epoch]
        return np.random.default_rng(key).permutation(len(self.batches))

    def next_batch(self) -> dict:
        if self.position >= len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation()
        self.last_batch = int(self._order[self.position])  # which batch: MetaNMT keeps D and D' apart
        idx = self.batches[self.last_batch]
        self.position += 1
        batch = collate(self.data, idx, self.src_offset)
        if self.device.type != "cpu":
            batch = {**batch, "net_input": {k: v.to(self.device, non_blocking=True) for k, v in batch["net_input"].items()},
                     "target": batch["target"].to(self.device, non_blocking=True)}
        batch["lang"] = self.lang
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()


class TaskSampler:
    """Picks the task of the next batch: p(k) ~ n_k^(1/T). T=1 samples by
    data size, large T approaches uniform (MetaNMT samples uniformly)."""

    def __init__(self, tasks: dict[str, Task], temperature: float, seed: int):
        self.tasks = tasks
        self.langs = sorted(tasks)
        sizes = np.array([len(tasks[k]) for k in self.langs], dtype=np.float64)
        weights = sizes ** (1.0 / temperature)
        self.probs = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def to(self, device) -> "TaskSampler":
        for task in self.tasks.values():
            task.device = torch.device(device)
        return self

    def sample(self) -> Task:
        return self.tasks[self.langs[int(self.rng.choice(len(self.langs), p=self.probs))]]

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "tasks": {k: t.state_dict() for k, t in self.tasks.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        for k, s in state["tasks"].items():
            if k in self.tasks:
                self.tasks[k].load_state_dict(s)
