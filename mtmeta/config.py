"""Typed configuration. Everything an experiment does is one of these
dataclasses; YAML recipes and CLI flags are converted and validated here, at
the edge, so the rest of the code can trust its inputs."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

LANG_RE = re.compile(r"^[a-z]{2,3}$")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def check_compute(cfg, where: str) -> None:
    """The device / precision / threads fields every computing section has."""
    if cfg.device not in DEVICES:
        raise ConfigError(f"{where}.device {cfg.device!r} unknown ({', '.join(DEVICES)})")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"{where}.precision {cfg.precision!r} unknown ({', '.join(PRECISIONS)})")
    if not isinstance(cfg.threads, int) or cfg.threads < 0:
        raise ConfigError(f"{where}.threads must be an integer >= 0 (0: every core), got {cfg.threads!r}")


def check_lang(code: str, what: str = "language") -> str:
    if not isinstance(code, str) or not LANG_RE.match(code):
        raise ConfigError(f"{what} {code!r} is not a language code (expected 2-3 lowercase letters, e.g. 'ro')")
    return code


@dataclass
class SourceSpec:
    """One input corpus for `mtmeta prepare`."""

    type: str = "pack"  # pack | files | hf | sacrebleu
    path: str = ""  # pack folder, HF dataset name or saved folder, sacrebleu test set
    lang: str = ""  # source language (files / hf / sacrebleu)
    role: str = "meta-train"
    name: str = ""
    tgt_path: str = ""  # files: English side
    split: str = "train"  # hf
    config_name: str = ""  # hf
    src_column: str = ""  # hf
    tgt_column: str = ""  # hf
    langs: list[str] = field(default_factory=list)  # pack: filter

    def validate(self) -> None:
        if self.type not in ("pack", "files", "hf", "sacrebleu"):
            raise ConfigError(f"source type {self.type!r} unknown (pack, files, hf, sacrebleu)")
        if not self.path:
            raise ConfigError(f"source of type {self.type!r} needs a path")
        if self.type != "pack":
            check_lang(self.lang, f"source {self.path}: lang")
        if self.type == "files" and not self.tgt_path:
            raise ConfigError(f"source {self.path}: type 'files' needs tgt_path (the English side)")
        for lang in self.langs:
            check_lang(lang, f"source {self.path}: langs entry")


@dataclass
class PrepareConfig:
    sources: list[SourceSpec] = field(default_factory=lambda: [SourceSpec(type="pack", path="../shared/corpus")])
    output: str = "work/prepared"
    train_langs: list[str] = field(default_factory=list)  # empty: every meta-train language found
    target_langs: list[str] = field(default_factory=list)  # empty: every language with an adapt set
    vocab_mode: str = "per_language"  # per_language | joint
    src_vocab_size: int = 4000
    joint_vocab_size: int = 16000
    tgt_vocab_size: int = 8000
    max_len_tokens: int = 200  # whitespace words; longer pairs are dropped
    max_len_ratio: float = 4.0  # char-length ratio between sides
    ratio_min_chars: int = 12  # ratio filter only applies when both sides are at least this long
    valid_per_lang: int = 100  # held out from each training language for validation
    max_pairs_per_lang: int = 0  # 0: all; >0 caps each language (quick runs)
    # Universal lexical representation: monolingual vectors aligned to English.
    ulr_vectors: bool = False  # build them (needed by model.embedding: ulr)
    vector_dim: int = 100
    vector_epochs: int = 5
    vector_max_sentences: int = 50000  # per language, for vector training
    num_universal: int = 2000  # universal tokens = most frequent English pieces (paper: 20,000)
    vector_files: dict[str, str] = field(default_factory=dict)  # language (or 'en') -> your own fastText .vec
    mono_files: dict[str, list[str]] = field(default_factory=dict)  # language -> extra monolingual text files
    # ULR alignment seeds: bilingual dictionaries X->English ('source english' word pairs per line).
    dictionaries: dict[str, str] = field(default_factory=dict)  # language -> dictionary file
    dictionary_dir: str = ""  # '': the pack's ../dictionaries/muse (MUSE train splits) when present; 'none': no default
    dictionary_seeds: str = "dictionary"  # Procrustes seeds with a dictionary: dictionary | induced | both
    seed: int = 1

    def validate(self) -> None:
        for s in self.sources:
            s.validate()
        if not self.sources:
            raise ConfigError("prepare needs at least one source")
        if self.vocab_mode not in ("per_language", "joint"):
            raise ConfigError(f"vocab_mode {self.vocab_mode!r} unknown (per_language, joint)")
        for lang in self.train_langs + self.target_langs:
            check_lang(lang)
        for name in ("src_vocab_size", "joint_vocab_size", "tgt_vocab_size", "max_len_tokens"):
            if getattr(self, name) < 8:
                raise ConfigError(f"{name} must be at least 8")
        if self.max_len_ratio <= 1:
            raise ConfigError("max_len_ratio must be > 1")
        for lang in list(self.vector_files) + list(self.mono_files):
            if lang != "en":
                check_lang(lang, "vector_files/mono_files key")
        if self.ulr_vectors and (self.vector_dim < 2 or self.num_universal < 1):
            raise ConfigError("vector_dim must be >= 2 and num_universal >= 1")
        for lang in self.dictionaries:
            check_lang(lang, "dictionaries key")
        if self.dictionary_seeds not in ("dictionary", "induced", "both"):
            raise ConfigError(f"dictionary_seeds {self.dictionary_seeds!r} unknown (dictionary, induced, both)")


@dataclass
class ModelConfig:
    embed_dim: int = 256
    ffn_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    heads: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.1
    max_positions: int = 256
    embedding: str = "tables"  # tables (one table per language) | ulr (universal lexical representation)
    ulr_tau: float = 0.05  # ULR softmax temperature

    def validate(self) -> None:
        if self.embed_dim % self.heads:
            raise ConfigError(f"embed_dim {self.embed_dim} must be divisible by heads {self.heads}")
        if self.embedding not in ("tables", "ulr"):
            raise ConfigError(f"model.embedding {self.embedding!r} unknown (tables, ulr)")
        if self.ulr_tau <= 0:
            raise ConfigError("model.ulr_tau must be positive")
        for name in ("embed_dim", "ffn_dim", "encoder_layers", "decoder_layers", "heads", "max_positions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive")


MODEL_PRESETS = {
    # ~7M parameters without the per-language source tables: trains at a few
    # thousand tokens/s on a 2-core CPU.
    "cpu": ModelConfig(),
    # MetaNMT paper sizes (Gu et al. 2018): 6+6 layers, d_model 512, FFN 512, 8 heads.
    "paper": ModelConfig(embed_dim=512, ffn_dim=512, encoder_layers=6, decoder_layers=6, heads=8),
    # For tests: trains in seconds.
    "tiny": ModelConfig(embed_dim=32, ffn_dim=64, encoder_layers=1, decoder_layers=1, heads=2, max_positions=128),
}


@dataclass
class MetaConfig:
    """MetaNMT (Gu et al. 2018): each source pair is a task; simulated
    learning on one batch, meta-update on another batch of the same pair."""

    variant: str = "fomaml"  # fomaml (paper) | maml (second order) | reptile | metasgd
    inner_steps: int = 0  # k simulated steps on D (paper: 1); 0 = the variant's default (reptile: 2 batches)
    # Empty / 0 pick what moves theta measurably: a fresh Adam at 1e-4 per task (the
    # paper's; fomaml, reptile), or SGD at 0.1 where the inner step must be plain SGD
    # (maml, metasgd). SGD at 1e-3 moves theta by ~2e-5 of its norm on per-token
    # losses: theta' = theta and FOMAML becomes multitask (evaluation/meta_diagnostics.py).
    inner_optimizer: str = ""  # sgd | adam
    inner_lr: float = 0.0
    tasks_per_step: int = 1  # meta-gradients averaged over this many tasks
    task_sampling: str = "uniform"  # uniform (paper) | size (p ~ n^(1/temperature))
    meta_valid_lang: str = ""  # e.g. ro: fine-tune a copy on its adapt set to pick checkpoints
    meta_valid_steps: int = 20
    meta_valid_sentences: int = 100

    def __post_init__(self) -> None:
        if not self.inner_steps:
            self.inner_steps = 2 if self.variant == "reptile" else 1
        if not self.inner_optimizer:
            self.inner_optimizer = "sgd" if self.variant in ("maml", "metasgd") else "adam"
        if not self.inner_lr:
            self.inner_lr = 1e-4 if self.inner_optimizer == "adam" else 0.1

    def validate(self) -> None:
        if self.inner_lr <= 0:
            raise ConfigError("meta.inner_lr must be positive")
        if self.variant not in ("fomaml", "maml", "reptile", "metasgd"):
            raise ConfigError(f"meta.variant {self.variant!r} unknown (fomaml, maml, reptile, metasgd)")
        if self.inner_optimizer not in ("sgd", "adam"):
            raise ConfigError(f"meta.inner_optimizer {self.inner_optimizer!r} unknown (sgd, adam)")
        if self.task_sampling not in ("uniform", "size"):
            raise ConfigError(f"meta.task_sampling {self.task_sampling!r} unknown (uniform, size)")
        if self.inner_steps < 1 or self.tasks_per_step < 1:
            raise ConfigError("meta.inner_steps and meta.tasks_per_step must be >= 1")
        if self.variant == "reptile" and self.inner_steps < 2:
            raise ConfigError("meta.variant reptile needs inner_steps >= 2 (with one step theta - theta' is a plain SGD step)")
        if self.variant in ("maml", "metasgd") and self.inner_optimizer != "sgd":
            raise ConfigError(f"meta.variant {self.variant} differentiates through plain SGD inner steps: use inner_optimizer: sgd")
        if self.meta_valid_lang:
            check_lang(self.meta_valid_lang, "meta.meta_valid_lang")


@dataclass
class TrainConfig:
    data: str = "work/prepared"
    output: str = "work/runs/multitask"
    strategy: str = "multitask"  # multitask | transfer | metanmt
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    langs: list[str] = field(default_factory=list)  # empty: all prepared training languages
    parent_lang: str = ""  # transfer: the one high-resource parent pair
    temperature: float = 5.0  # language sampling p ~ n^(1/T)
    max_tokens: int = 4000  # per batch, source or target side
    lr: float = 5e-4
    warmup_steps: int = 500
    # > 0: warm up over this many target tokens and decay by tokens, not updates, so that
    # strategies spending different tokens per update (MetaNMT: support + query) share one
    # learning-rate curve over a shared token budget (mtmeta/engine.py, Engine.lr_factor).
    warmup_tokens: int = 0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    max_steps: int = 0  # budgets: 0 = unlimited; training stops at the first one reached
    max_minutes: float = 0.0
    max_train_tokens: int = 0
    validate_every: int = 200
    bleu_sentences: int = 100  # per validation, decoded greedily
    save_every: int = 200
    snapshot_tokens: int = 0  # > 0: also keep weights-only snapshots every this many target tokens
    patience: int = 0  # validations without improvement before stopping; 0 = never
    select_metric: str = "loss"  # which validation score picks best.pt: loss | bleu | chrf
    seed: int = 1
    log_every: int = 20
    # Where and how it computes (mtmeta/hardware.py): auto = CUDA if present, else CPU;
    # bf16 autocast where the hardware runs bf16 natively (fp32 master weights), else fp32.
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16
    threads: int = 0  # CPU threads; 0 = every core (use 1 when another job shares a 2-core machine)

    def validate(self) -> None:
        check_compute(self, "train")
        self.model.validate()
        if self.strategy not in ("multitask", "transfer", "metanmt"):
            raise ConfigError(
                f"strategy {self.strategy!r} unknown (multitask, transfer, metanmt; 'scratch' is `mtmeta adapt --scratch`)"
            )
        self.meta.validate()
        if self.select_metric not in ("loss", "bleu", "chrf"):
            raise ConfigError(f"select_metric {self.select_metric!r} unknown (loss, bleu, chrf)")
        if self.select_metric != "loss" and self.bleu_sentences < 1:
            raise ConfigError(f"select_metric {self.select_metric} needs bleu_sentences >= 1 (translations to score)")
        if self.strategy == "transfer":
            check_lang(self.parent_lang, "transfer parent_lang")
        for lang in self.langs:
            check_lang(lang)
        if not (self.max_steps or self.max_minutes or self.max_train_tokens):
            raise ConfigError("set a budget: max_steps, max_minutes or max_train_tokens")
        if self.max_tokens < 16:
            raise ConfigError("max_tokens must be at least 16")
        if self.warmup_tokens < 0 or self.warmup_steps < 0 or self.snapshot_tokens < 0:
            raise ConfigError("warmup_steps, warmup_tokens and snapshot_tokens must be >= 0")
        if self.temperature <= 0:
            raise ConfigError("temperature must be positive")


@dataclass
class AdaptConfig:
    checkpoint: str = "work/runs/multitask/best.pt"  # empty: train from scratch on the adapt set
    lang: str = "ro"
    data: str = "work/prepared"  # prepared folder holding the language's adapt/valid texts
    train_files: list[str] = field(default_factory=list)  # or your own: [source file, English file]
    valid_files: list[str] = field(default_factory=list)  # and [source file, English file] for validation
    output: str = "work/runs/adapt-ro"
    tune: str = "all"  # all | emb_enc | emb
    src_vocab_size: int = 2000
    max_tokens: int = 2000
    lr: float = 3e-4
    warmup_steps: int = 50
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    max_steps: int = 600
    max_minutes: float = 0.0
    validate_every: int = 50
    bleu_sentences: int = 212
    patience: int = 4
    select_metric: str = "chrf"  # chrF is smoother than BLEU at the low scores of early adaptation
    save_every: int = 0
    log_every: int = 10
    model: ModelConfig = field(default_factory=ModelConfig)  # only used from scratch
    zero_shot: bool = False  # no fine-tuning: only add the language's vocabulary (and ULR queries)
    random_queries: bool = False  # ULR ablation: random instead of aligned query vectors
    vector_file: str = ""  # ULR: your own fastText .vec for the new language
    mono_files: list[str] = field(default_factory=list)  # ULR: extra monolingual text for its vectors
    dictionary: str = ""  # ULR: X->English dictionary file for the alignment; '': the pack's MUSE file when present; 'none'
    vector_epochs: int = 10
    # Against forgetting the source languages: an L2 pull toward the
    # pre-trained start (the paper's Gaussian prior) or EWC.
    regularizer: str = "none"  # none | l2 | ewc
    reg_lambda: float = 0.0
    fisher_batches: int = 20  # EWC: source-task batches for the diagonal Fisher estimate
    forgetting_lang: str = ""  # a source language whose held-out BLEU is reported before/after adapting
    seed: int = 1
    # Where and how it computes (mtmeta/hardware.py): auto = CUDA if present, else CPU;
    # bf16 autocast where the hardware runs bf16 natively (fp32 master weights), else fp32.
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16
    threads: int = 0  # CPU threads; 0 = every core (use 1 when another job shares a 2-core machine)

    def validate(self) -> None:
        check_compute(self, "adapt")
        check_lang(self.lang, "adapt lang")
        if self.regularizer not in ("none", "l2", "ewc"):
            raise ConfigError(f"regularizer {self.regularizer!r} unknown (none, l2, ewc)")
        if self.regularizer != "none" and (self.reg_lambda <= 0 or not self.checkpoint):
            raise ConfigError("a regularizer needs reg_lambda > 0 and a pre-trained checkpoint")
        if self.forgetting_lang:
            check_lang(self.forgetting_lang, "forgetting_lang")
        if self.zero_shot and not self.checkpoint:
            raise ConfigError("zero_shot needs a pre-trained checkpoint")
        if self.select_metric not in ("loss", "bleu", "chrf"):
            raise ConfigError(f"select_metric {self.select_metric!r} unknown (loss, bleu, chrf)")
        if self.select_metric != "loss" and self.bleu_sentences < 1:
            raise ConfigError(f"select_metric {self.select_metric} needs bleu_sentences >= 1 (translations to score)")
        if not self.checkpoint:
            self.model.validate()
        if self.tune not in ("all", "emb_enc", "emb"):
            raise ConfigError(f"tune {self.tune!r} unknown (all, emb_enc, emb)")
        if self.max_steps < 1 and self.max_minutes <= 0 and not self.zero_shot:
            raise ConfigError("set a budget: max_steps or max_minutes (or zero_shot: true)")


@dataclass
class EvalConfig:
    lang: str = "ro"
    test: str = ""  # test set name in the prepared folder; empty: the language's 'test' role
    beam: int = 4
    batch_sentences: int = 64
    max_sentences: int = 0  # 0: the full test set
    # Where and how it computes (mtmeta/hardware.py): auto = CUDA if present, else CPU;
    # bf16 autocast where the hardware runs bf16 natively (fp32 master weights), else fp32.
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # auto | fp32 | bf16 (decoding gains little from bf16)
    threads: int = 0  # CPU threads; 0 = every core (use 1 when another job shares a 2-core machine)

    def validate(self) -> None:
        check_compute(self, "evaluate")


@dataclass
class RecipeConfig:
    """A whole experiment: prepare, train, adapt each target, evaluate."""

    name: str = "quick"
    workdir: str = "work/quick"
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    targets: list[str] = field(default_factory=lambda: ["ro"])
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        self.prepare.validate()
        self.train.validate()
        self.evaluate.validate()
        check_compute(self.adapt, "adapt")
        for t in self.targets:
            check_lang(t, "recipe target")


@dataclass
class TierConfig:
    """One block of the comparison grid: every combination of its lists."""

    name: str = ""
    strategies: list[str] = field(default_factory=list)  # names of `pretrain` entries, or "scratch"
    targets: list[str] = field(default_factory=list)  # empty: the grid's targets
    tunes: list[str] = field(default_factory=lambda: ["best"])  # all | emb_enc | emb | best (picked on validation)
    sizes: list[int] = field(default_factory=lambda: [800])  # 0 = zero-shot; above the adapt set: + adapt-extra
    draws: int = 1  # random subsets drawn for each size below the full adapt set
    seeds: list[int] = field(default_factory=lambda: [1])  # adaptation seeds

    def validate(self, strategies: list[str], targets: list[str]) -> None:
        where = f"tier {self.name!r}"
        if not self.name or not re.match(r"^[A-Za-z0-9_-]+$", self.name):
            raise ConfigError(f"{where}: a tier needs a name of letters, digits, '-' or '_'")
        if not self.strategies:
            raise ConfigError(f"{where}: no strategies")
        for s in self.strategies:
            if s != "scratch" and s not in strategies:
                raise ConfigError(f"{where}: strategy {s!r} is not a `pretrain` entry ({', '.join(strategies)}) or 'scratch'")
        for t in self.targets:
            check_lang(t, f"{where}: target")
            if t not in targets:
                raise ConfigError(f"{where}: target {t!r} is not one of the grid's targets ({', '.join(targets)})")
        for t in self.tunes:
            if t not in ("all", "emb_enc", "emb", "best"):
                raise ConfigError(f"{where}: tune {t!r} unknown (all, emb_enc, emb, best)")
        if not self.sizes or any(n < 0 for n in self.sizes):
            raise ConfigError(f"{where}: sizes must be a non-empty list of sentence counts >= 0")
        if self.draws < 1 or not self.seeds:
            raise ConfigError(f"{where}: draws must be >= 1 and seeds non-empty")
        if 0 in self.sizes and "scratch" in self.strategies:
            raise ConfigError(f"{where}: size 0 (zero-shot) needs a pre-trained model; scratch has none")


@dataclass
class CompareConfig:
    """`mtmeta compare`: pre-training strategies x targets x adaptation
    options x adapt-set sizes x seeds, on one prepared folder.

    In YAML, `train` is the base every `pretrain` entry is merged over, so a
    strategy entry only says how it differs (and the budget is stated once)."""

    name: str = "compare"
    workdir: str = "work/compare"  # checkpoints and logs (large, not committed)
    results: str = "results/compare"  # results.jsonl, hypotheses, summary, plots (committed)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: dict[str, TrainConfig] = field(default_factory=dict)
    scratch_model: ModelConfig = field(default_factory=ModelConfig)  # the scratch baseline's architecture
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    evaluate: EvalConfig = field(default_factory=lambda: EvalConfig(beam=1, batch_sentences=128))
    targets: list[str] = field(default_factory=lambda: ["ro", "lv", "fi", "tr", "ko"])
    tiers: list[TierConfig] = field(default_factory=list)
    full_size: int = 800  # sentences in each target's adapt set
    # A strategy with no option runs of its own takes another's best option,
    # e.g. {transfer: multitask, metanmt-maml: metanmt}.
    best_tune_from: dict[str, str] = field(default_factory=dict)
    baseline: str = "multitask"  # paired bootstrap: baseline ...
    system: str = "metanmt"  # ... against this strategy, per language
    bootstrap_samples: int = 1000
    equal_budget: bool = True  # refuse pretrain entries with different budgets

    def validate(self) -> None:
        self.prepare.validate()
        if not self.pretrain and any(s != "scratch" for t in self.tiers for s in t.strategies):
            raise ConfigError("compare: no `pretrain` entries")
        for name, tr in self.pretrain.items():
            if name == "scratch" or not re.match(r"^[A-Za-z0-9_-]+$", name):
                raise ConfigError(f"pretrain entry {name!r}: names are letters, digits, '-' or '_', and not 'scratch'")
            try:
                tr.validate()
            except ConfigError as e:
                raise ConfigError(f"pretrain entry {name!r}: {e}") from None
        budgets = {name: (tr.max_train_tokens, tr.max_minutes, tr.max_steps) for name, tr in self.pretrain.items()}
        if self.equal_budget and len(set(budgets.values())) > 1:
            raise ConfigError(
                "compare: pre-training strategies must get the same budget (max_train_tokens, max_minutes, max_steps): "
                + ", ".join(f"{k}={v}" for k, v in budgets.items())
                + "; set equal_budget: false to allow it"
            )
        self.scratch_model.validate()
        if not self.targets:
            raise ConfigError("compare: no targets")
        for t in self.targets:
            check_lang(t, "compare target")
        if not self.tiers:
            raise ConfigError("compare: no tiers")
        if len({t.name for t in self.tiers}) != len(self.tiers):
            raise ConfigError("compare: tier names must be unique")
        for tier in self.tiers:
            tier.validate(list(self.pretrain), self.targets)
        for k, v in self.best_tune_from.items():
            if k not in self.pretrain or v not in self.pretrain:
                raise ConfigError(f"best_tune_from: {k!r} -> {v!r}: both must be `pretrain` entries")
        if self.full_size < 1 or self.bootstrap_samples < 1:
            raise ConfigError("compare: full_size and bootstrap_samples must be positive")
        if self.evaluate.beam < 1 or self.evaluate.batch_sentences < 1:
            raise ConfigError("compare: evaluate.beam and evaluate.batch_sentences must be positive")
        self.evaluate.validate()
        check_compute(self.adapt, "adapt")


def read_yaml(path: str | Path, what: str = "config file"):
    """Parsed YAML, or a one-line ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_compare_yaml(path: str | Path) -> CompareConfig:
    """A compare recipe: each `pretrain` entry is merged over `train`."""
    path = Path(path)
    data = read_yaml(path, "recipe file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping")
    base = data.get("train") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{path.name}.train: expected a mapping")
    entries = data.get("pretrain") or {}
    if not isinstance(entries, dict):
        raise ConfigError(f"{path.name}.pretrain: expected a mapping of name -> train settings")
    data = dict(data)
    data["pretrain"] = {k: _deep_merge(base, v or {}) for k, v in entries.items()}
    cfg = from_dict(CompareConfig, data, where=path.name)
    cfg.validate()
    return cfg


def is_compare_recipe(path: str | Path) -> bool:
    """Whether a recipe file describes a comparison grid (it has `tiers`)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "tiers" in data


# --- dict <-> dataclass -----------------------------------------------------


def from_dict(cls: type, data: Any, where: str = ""):
    """Build dataclass `cls` from nested dicts, rejecting unknown keys and
    wrong types with the key's path in the message."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _convert(tp, value, where):
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and tp is ModelConfig:
            if value not in MODEL_PRESETS:
                raise ConfigError(f"{where}: unknown model preset {value!r} ({', '.join(MODEL_PRESETS)})")
            return dataclasses.replace(MODEL_PRESETS[value])
        if isinstance(value, dict) and tp is ModelConfig and "preset" in value:
            rest = dict(value)
            base = _convert(tp, rest.pop("preset"), where)
            return from_dict(tp, dataclasses.asdict(base) | rest, where)
        return from_dict(tp, value, where)
    origin = get_origin(tp)
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_convert(key_tp, k, f"{where} key"): _convert(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path, cls: type = RecipeConfig):
    path = Path(path)
    cfg = from_dict(cls, read_yaml(path, "recipe file"), where=path.name)
    cfg.validate()
    return cfg
