"""Language-aware source embeddings.

Every language's local subword ids are placed in one global id space:
ids 0..3 are the shared specials, then each language owns a contiguous
range. A batch can then hold any mix of languages and the encoder needs no
side channel telling it which language it reads.

The source-embedding interface, which LanguageTables and the ULR module
(ulr.py) both implement and which strategies and adaptation read instead of
asking which kind of embedding they hold:

    kind                  "tables" | "ulr" (the config's model.embedding)
    needs_vectors         built from the prepared folder's aligned vectors
    needs_queries         a new language needs query vectors (add_language(queries=...))
    parameter_roles()     {parameter name: "language" | "universal" | "shared"}:
                          language-specific tables, universal parts shared by
                          every language that fine-tuning one language leaves
                          alone, and shared parts trained with everything
                          (the specials)
    add_language(lang, vocab_size, table=None, **inputs)
    language_inputs(lang) what add_language needs to make `lang` again
    fold()                plain tables with the same output (inference)
    build(cfg, tgt_vocab_size, src_vocabs, joint, vectors)   from a ModelConfig
"""
from __future__ import annotations

import torch
from torch import nn

from data_prep.vocab import N_SPECIAL, PAD


class LanguageTables(nn.Module):
    """One embedding table per source language (or one shared table in joint
    vocabulary mode, where every language maps to the table named 'src')."""

    kind = "tables"
    needs_vectors = False
    needs_queries = False

    def __init__(self, embed_dim: int, zero_init: bool = False):
        super().__init__()
        self.zero_init = zero_init  # ULR's language-specific delta starts at zero
        self.embedding_dim = embed_dim
        self.padding_idx = PAD
        self.specials = nn.Embedding(N_SPECIAL, embed_dim, padding_idx=PAD)
        nn.init.normal_(self.specials.weight, mean=0, std=embed_dim**-0.5)
        with torch.no_grad():
            if zero_init:
                self.specials.weight.zero_()
            self.specials.weight[PAD].zero_()
        self.tables = nn.ModuleDict()
        self.lang_table: dict[str, str] = {}  # language -> table name
        self._offsets: dict[str, int] = {}  # table name -> first global id

    # --- vocabulary layout -------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return N_SPECIAL + sum(t.num_embeddings for t in self.tables.values())

    def add_table(self, name: str, vocab_size: int, init: torch.Tensor | None = None) -> None:
        if name in self.tables:
            raise ValueError(f"source table {name!r} already exists")
        table = nn.Embedding(vocab_size - N_SPECIAL, self.embedding_dim)
        if init is not None:
            table.weight.data.copy_(init)
        elif self.zero_init:
            nn.init.zeros_(table.weight)
        else:
            nn.init.normal_(table.weight, mean=0, std=self.embedding_dim**-0.5)
        self._offsets[name] = self.num_embeddings
        self.tables[name] = table

    def add_language(self, lang: str, vocab_size: int | None, table: str | None = None) -> None:
        """Register `lang`; with vocab_size a new table is made for it, with
        `table` it shares an existing one (joint vocabulary)."""
        name = table or lang
        if name not in self.tables:
            self.add_table(name, vocab_size)
        self.lang_table[lang] = name

    def offset(self, lang: str) -> int:
        """Add to a language's local ids (>= N_SPECIAL) to get global ids."""
        return self._offsets[self.lang_table[lang]] - N_SPECIAL

    def languages(self) -> list[str]:
        return list(self.lang_table)

    def language_parameters(self, lang: str) -> list[nn.Parameter]:
        return [self.tables[self.lang_table[lang]].weight]

    def language_inputs(self, lang: str) -> dict:
        """What add_language needs besides the vocabulary size: nothing."""
        return {}

    # --- what strategies need to know ------------------------------------------
    def parameter_roles(self) -> dict[str, str]:
        """The specials are shared by every language; each table is one
        language's (or, joint, every language's single source table)."""
        roles = {"specials.weight": "shared"}
        roles.update({f"tables.{name}.weight": "language" for name in self.tables})
        return roles

    def fold(self) -> "LanguageTables":
        """Already plain tables."""
        return self

    @classmethod
    def build(cls, embed_dim: int, tgt_vocab_size: int, src_vocabs: dict[str, int], joint: bool = False,
              vectors: dict | None = None, tau: float = 0.0) -> "LanguageTables":
        embed = cls(embed_dim)
        for lang, size in src_vocabs.items():
            embed.add_language(lang, size, table="src" if joint else None)
        return embed

    # --- forward -------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.specials.weight.new_zeros(*tokens.shape, self.embedding_dim)
        special = tokens < N_SPECIAL
        if special.any():
            out[special] = self.specials(tokens[special])
        for name, table in self.tables.items():
            start = self._offsets[name]
            mask = (tokens >= start) & (tokens < start + table.num_embeddings)
            if mask.any():
                out[mask] = table(tokens[mask] - start)
        return out

    # --- (de)serialisation of the layout ------------------------------------------
    def layout(self) -> dict:
        return {
            "kind": "tables",
            "tables": {name: t.num_embeddings + N_SPECIAL for name, t in self.tables.items()},
            "lang_table": dict(self.lang_table),
        }

    @classmethod
    def from_layout(cls, embed_dim: int, layout: dict) -> "LanguageTables":
        emb = cls(embed_dim)
        for name, size in layout["tables"].items():
            emb.add_table(name, size)
        emb.lang_table.update(layout["lang_table"])
        return emb
