"""Universal Lexical Representation (Gu et al., NAACL 2018), as MetaNMT uses it.

For a source token x of language k:
    alpha = softmax(q_k(x) A K^T / tau)
    e(x)  = sum_i alpha_i eps_u[i] + delta_k[x]
q_k(x): fixed query (the token's monolingual vector, aligned to English);
K: fixed keys (English vectors of the universal tokens, the most frequent
English pieces); A: learned, identity at start; eps_u: learned universal
values; delta_k: learned language-specific table, zero at start. Special
tokens use delta only.

ULR is computed once per distinct token id in a batch (torch.unique), and
`fold()` turns the whole thing into plain per-language tables so
translation costs what a model without ULR costs.
"""
from __future__ import annotations

import torch
from torch import nn

from data_prep.vocab import N_SPECIAL, PAD

from .embeddings import LanguageTables


class _Buffer(nn.Module):
    """Holds one fixed matrix as a (saved, never trained) buffer."""

    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(rows, dim))


class UniversalLexicalEmbedding(nn.Module):
    """The source-embedding interface of embeddings.py: delta's tables are
    language-specific, the universal values are shared by every language
    (and kept out of language-specific updates), A and the specials are
    shared parameters."""

    kind = "ulr"
    needs_vectors = True
    needs_queries = True

    def __init__(self, embed_dim: int, query_dim: int, en_vocab_size: int, num_universal: int, tau: float = 0.05):
        super().__init__()
        self.embedding_dim = embed_dim
        self.padding_idx = PAD
        self.query_dim = query_dim
        self.tau = tau
        self.num_universal = num_universal
        # English vectors of the whole target vocabulary: keys are a subset,
        # and a new language is aligned against all of them.
        self.register_buffer("en_vectors", torch.zeros(en_vocab_size, query_dim))
        self.register_buffer("key_ids", torch.arange(N_SPECIAL, N_SPECIAL + num_universal))
        self.A = nn.Parameter(torch.eye(query_dim))
        self.values = nn.Parameter(torch.randn(num_universal, embed_dim) * embed_dim**-0.5)
        self.delta = LanguageTables(embed_dim, zero_init=True)
        self.queries = nn.ModuleDict()  # table name -> _Buffer of query vectors (local ids)

    # --- the LanguageTables interface ------------------------------------------
    @property
    def lang_table(self) -> dict[str, str]:
        return self.delta.lang_table

    @property
    def tables(self):
        return self.delta.tables

    @property
    def num_embeddings(self) -> int:
        return self.delta.num_embeddings

    def languages(self) -> list[str]:
        return self.delta.languages()

    def offset(self, lang: str) -> int:
        return self.delta.offset(lang)

    def add_language(self, lang: str, vocab_size: int | None, table: str | None = None, queries: torch.Tensor | None = None) -> None:
        """queries: [vocab_size, query_dim] aligned vectors (rows < 4 unused)."""
        name = table or lang
        new = name not in self.delta.tables
        self.delta.add_language(lang, vocab_size, table)
        if new:
            buf = _Buffer(vocab_size, self.query_dim)
            if queries is not None:
                if tuple(queries.shape) != (vocab_size, self.query_dim):
                    raise ValueError(f"queries for {lang!r} have shape {tuple(queries.shape)}, expected {(vocab_size, self.query_dim)}")
                buf.weight.copy_(torch.as_tensor(queries))
            self.queries[name] = buf

    def language_inputs(self, lang: str) -> dict:
        """The query vectors `lang` was added with (a copy)."""
        return {"queries": self.queries[self.delta.lang_table[lang]].weight.clone()}

    def parameter_roles(self) -> dict[str, str]:
        roles = {"A": "shared", "values": "universal"}
        roles.update({f"delta.{name}": role for name, role in self.delta.parameter_roles().items()})
        return roles

    @classmethod
    def build(cls, embed_dim: int, tgt_vocab_size: int, src_vocabs: dict[str, int], joint: bool = False,
              vectors: dict | None = None, tau: float = 0.05) -> "UniversalLexicalEmbedding":
        """`vectors`: the prepared folder's fixed vectors: {'en_vectors': [V_en, d_q],
        'key_ids': [K], 'queries': {table name: [V, d_q]}}."""
        if vectors is None:
            raise ValueError("ULR embedding needs query and key vectors (prepare with ulr_vectors: true)")
        en_vectors = torch.as_tensor(vectors["en_vectors"], dtype=torch.float32)
        key_ids = torch.as_tensor(vectors["key_ids"], dtype=torch.long)
        embed = cls(embed_dim, en_vectors.shape[1], tgt_vocab_size, len(key_ids), tau)
        embed.set_english(en_vectors, key_ids)
        for lang, size in src_vocabs.items():
            name = "src" if joint else lang
            q = vectors["queries"].get(name)
            embed.add_language(lang, size, table="src" if joint else None, queries=None if q is None else torch.as_tensor(q))
        return embed

    def set_english(self, en_vectors: torch.Tensor, key_ids: torch.Tensor) -> None:
        self.en_vectors.copy_(torch.as_tensor(en_vectors))
        self.key_ids.copy_(torch.as_tensor(key_ids))

    @property
    def keys(self) -> torch.Tensor:
        return self.en_vectors[self.key_ids]

    # --- forward --------------------------------------------------------------------
    def gather_queries(self, ids: torch.Tensor) -> torch.Tensor:
        """Query vectors of 1-d global ids (zero for specials)."""
        q = self.en_vectors.new_zeros(len(ids), self.query_dim)
        for name, buf in self.queries.items():
            start = self.delta._offsets[name]
            mask = (ids >= start) & (ids < start + buf.weight.shape[0] - N_SPECIAL)
            if mask.any():
                q[mask] = buf.weight[ids[mask] - start + N_SPECIAL]
        return q

    def attention(self, ids: torch.Tensor) -> torch.Tensor:
        """alpha for 1-d global ids: [len(ids), num_universal]."""
        q = self.gather_queries(ids)
        logits = (q @ self.A) @ self.keys.T / self.tau
        return torch.softmax(logits, dim=-1)

    def universal(self, ids: torch.Tensor) -> torch.Tensor:
        """sum_i alpha_i eps_u[i] for 1-d ids; zero for special tokens."""
        e = self.attention(ids) @ self.values
        return e * (ids >= N_SPECIAL).unsqueeze(-1).to(e.dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        uniq, inverse = torch.unique(tokens, return_inverse=True)
        return self.universal(uniq)[inverse] + self.delta(tokens)

    # --- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def fold(self) -> LanguageTables:
        """Plain tables with the same output for every id."""
        folded = LanguageTables(self.embedding_dim)
        folded.specials.weight.copy_(self.delta.specials.weight)
        for name, table in self.delta.tables.items():
            start = self.delta._offsets[name]
            ids = torch.arange(start, start + table.num_embeddings)
            folded.add_table(name, table.num_embeddings + N_SPECIAL, init=self.universal(ids) + table.weight)
        folded.lang_table.update(self.delta.lang_table)
        return folded

    # --- layout -------------------------------------------------------------------------
    def layout(self) -> dict:
        return {
            **self.delta.layout(),
            "kind": "ulr",
            "query_dim": self.query_dim,
            "en_vocab_size": self.en_vectors.shape[0],
            "num_universal": self.num_universal,
            "tau": self.tau,
        }

    @classmethod
    def from_layout(cls, embed_dim: int, layout: dict) -> "UniversalLexicalEmbedding":
        emb = cls(embed_dim, layout["query_dim"], layout["en_vocab_size"], layout["num_universal"], layout["tau"])
        for name, size in layout["tables"].items():
            emb.delta.add_table(name, size)
            emb.queries[name] = _Buffer(size, emb.query_dim)
        emb.delta.lang_table.update(layout["lang_table"])
        return emb
