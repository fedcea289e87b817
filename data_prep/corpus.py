"""The unit every loader produces: one aligned parallel text with its role."""
from __future__ import annotations

from dataclasses import dataclass, field

# What a text may be used for. Only TRAIN_ROLES ever reach a training batch;
# every other role is protected by decontamination.
ROLES = ("meta-train", "adapt", "adapt-valid", "test", "adapt-extra")
TRAIN_ROLES = ("meta-train",)
TARGET_LANG = "en"


@dataclass
class ParallelText:
    lang: str  # source language code (ISO 639-1), target is always English
    role: str  # one of ROLES
    name: str  # e.g. "newstest2016", "flores200-devtest-adapt800"
    src: list[str]
    tgt: list[str]
    origin: str = ""  # path or dataset id, for error messages and the summary
    meta: dict = field(default_factory=dict)

    @property
    def pair(self) -> str:
        return f"{self.lang}-{TARGET_LANG}"

    def __len__(self) -> int:
        return len(self.src)
