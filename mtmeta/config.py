"""Typed configuration. Everything an experiment does is one of these
dataclasses; YAML recipes and CLI flags are converted and validated here, at
the edge, so the rest of the code can trust its inputs.

Each field is declared with `opt(default, help, range...)`: the command line
(mtmeta/cli.py) is generated from these declarations, help text included,
and `check_fields` checks every field's type and range when a config is
validated. A new field therefore appears on the command line, in `--help`
and in validation by itself."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from data_prep.config import LANG_RE, PrepareConfig, SourceSpec, check_fields, check_lang, opt  # noqa: F401 (re-exported)
from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
SELECT_METRICS = ("loss", "bleu", "chrf")
TUNES = ("all", "emb_enc", "emb")

_DEVICE_HELP = "auto: CUDA when a GPU is visible, else CPU"
_PRECISION_HELP = "auto: bf16 autocast where the hardware runs it natively (fp32 master weights), else fp32"
_THREADS_HELP = "CPU threads (0: every core; 1 when another job shares a 2-core machine)"


def check_compute(cfg, where: str) -> None:
    """The device / precision / threads fields every computing section has."""
    if cfg.device not in DEVICES:
        raise ConfigError(f"{where}.device {cfg.device!r} unknown ({', '.join(DEVICES)})")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"{where}.precision {cfg.precision!r} unknown ({', '.join(PRECISIONS)})")
    if not isinstance(cfg.threads, int) or isinstance(cfg.threads, bool) or cfg.threads < 0:
        raise ConfigError(f"{where}.threads must be an integer >= 0 (0: every core), got {cfg.threads!r}")


@dataclass
class ModelConfig:
    embed_dim: int = opt(256, "model width (d_model)", min=1)
    ffn_dim: int = opt(1024, "feed-forward inner size", min=1)
    encoder_layers: int = opt(3, "encoder layers", min=1)
    decoder_layers: int = opt(3, "decoder layers", min=1)
    heads: int = opt(4, "attention heads (must divide embed_dim)", min=1)
    dropout: float = opt(0.1, "dropout", min=0.0, max=0.99)
    attention_dropout: float = opt(0.1, "attention dropout", min=0.0, max=0.99)
    max_positions: int = opt(256, "longest source/target in pieces (longer inputs are cut)", min=2)
    embedding: str = opt("tables", "source embedding: per-language tables, or the universal lexical representation",
                         choices=("tables", "ulr"), flag="--embedding")
    ulr_tau: float = opt(0.05, "ULR softmax temperature", gt=0.0)

    def validate(self, where: str = "model") -> None:
        check_fields(self, where)
        if self.embed_dim % self.heads:
            raise ConfigError(f"embed_dim {self.embed_dim} must be divisible by heads {self.heads}")


MODEL_PRESETS = {
    # ~7M parameters without the per-language source tables: trains at a few
    # thousand tokens/s on a 2-core CPU.
    "cpu": ModelConfig(),
    # MetaNMT paper sizes (Gu et al. 2018): 6+6 layers, d_model 512, FFN 512, 8 heads.
    "paper": ModelConfig(embed_dim=512, ffn_dim=512, encoder_layers=6, decoder_layers=6, heads=8),
    # For tests: trains in seconds.
    "tiny": ModelConfig(embed_dim=32, ffn_dim=64, encoder_layers=1, decoder_layers=1, heads=2, max_positions=128),
}

META_VARIANTS = ("fomaml", "maml", "reptile", "metasgd")


@dataclass
class MetaConfig:
    """MetaNMT (Gu et al. 2018): each source pair is a task; simulated
    learning on one batch, meta-update on another batch of the same pair."""

    variant: str = opt("fomaml", "fomaml (paper), maml (second order), reptile, metasgd", choices=META_VARIANTS)
    inner_steps: int = opt(0, "k simulated steps on D (paper: 1); 0: the variant's default (reptile: 2 batches)", min=0)
    # Empty / 0 pick what moves theta measurably: a fresh Adam at 1e-4 per task (the
    # paper's; fomaml, reptile), or SGD at 0.1 where the inner step must be plain SGD
    # (maml, metasgd). SGD at 1e-3 moves theta by ~2e-5 of its norm on per-token
    # losses: theta' = theta and FOMAML becomes multitask (benchmarks/meta_diagnostics.py).
    inner_optimizer: str = opt("", "inner step optimizer, sgd | adam ('': adam for fomaml/reptile, sgd for maml/metasgd)",
                               choices=("", "sgd", "adam"))
    inner_lr: float = opt(0.0, "inner learning rate (0: 1e-4 with adam, 0.1 with sgd)", min=0.0)
    tasks_per_step: int = opt(1, "meta-gradients averaged over this many tasks", min=1)
    task_sampling: str = opt("uniform", "uniform (paper) or size (p ~ n^(1/temperature))", choices=("uniform", "size"))
    meta_valid_lang: str = opt("", "fine-tune a copy on this language's adapt set to pick checkpoints (e.g. ro)",
                               flag="--meta-valid-lang")
    meta_valid_steps: int = opt(20, "meta-validation fine-tuning steps", min=0)
    meta_valid_sentences: int = opt(100, "meta-validation sentences scored", min=0)

    def __post_init__(self) -> None:
        if not self.inner_steps:
            self.inner_steps = 2 if self.variant == "reptile" else 1
        if not self.inner_optimizer:
            self.inner_optimizer = "sgd" if self.variant in ("maml", "metasgd") else "adam"
        if not self.inner_lr:
            self.inner_lr = 1e-4 if self.inner_optimizer == "adam" else 0.1

    def validate(self, where: str = "meta") -> None:
        check_fields(self, where)
        if self.inner_lr <= 0:
            raise ConfigError("meta.inner_lr must be positive")
        if self.inner_optimizer not in ("sgd", "adam"):
            raise ConfigError(f"meta.inner_optimizer {self.inner_optimizer!r} unknown (sgd, adam)")
        if self.inner_steps < 1:
            raise ConfigError("meta.inner_steps and meta.tasks_per_step must be >= 1")
        if self.variant == "reptile" and self.inner_steps < 2:
            raise ConfigError("meta.variant reptile needs inner_steps >= 2 (with one step theta - theta' is a plain SGD step)")
        if self.variant in ("maml", "metasgd") and self.inner_optimizer != "sgd":
            raise ConfigError(f"meta.variant {self.variant} differentiates through plain SGD inner steps: use inner_optimizer: sgd")
        if self.meta_valid_lang:
            check_lang(self.meta_valid_lang, "meta.meta_valid_lang")


@dataclass
class TrainConfig:
    data: str = opt("work/prepared", "prepared folder (mtmeta prepare)")
    output: str = opt("work/runs/multitask", "run folder: checkpoints and train_log.jsonl")
    strategy: str = opt("multitask", "pre-training strategy (registered in mtmeta/strategies: multitask, transfer, metanmt)")
    model: ModelConfig = opt(help="model size and embedding (--preset NAME or --model-* flags)", factory=ModelConfig)
    meta: MetaConfig = opt(help="MetaNMT settings (--meta-* flags)", factory=MetaConfig)
    langs: list[str] = opt(help="source languages to train on (empty: all prepared training languages)", factory=list)
    parent_lang: str = opt("", "transfer: the one high-resource parent pair")
    temperature: float = opt(5.0, "language sampling p ~ n^(1/T)", gt=0.0)
    max_tokens: int = opt(4000, "tokens per batch, source or target side", min=16)
    lr: float = opt(5e-4, "peak learning rate", gt=0.0)
    warmup_steps: int = opt(500, "linear warmup updates", min=0)
    # > 0: warm up over this many target tokens and decay by tokens, not updates, so that
    # strategies spending different tokens per update (MetaNMT: support + query) share one
    # learning-rate curve over a shared token budget (mtmeta/engine.py, Engine.lr_factor).
    warmup_tokens: int = opt(0, "> 0: warm up over this many target tokens and decay by tokens, not updates", min=0)
    label_smoothing: float = opt(0.1, "label smoothing", min=0.0, max=0.99)
    clip_norm: float = opt(1.0, "gradient norm clip (0: none)", min=0.0)
    max_steps: int = opt(0, "budget: updates (0: unlimited; training stops at the first budget reached)", min=0)
    max_minutes: float = opt(0.0, "budget: minutes of training (0: unlimited)", min=0.0)
    max_train_tokens: int = opt(0, "budget: target tokens of forward/backward work (0: unlimited)", min=0)
    validate_every: int = opt(200, "updates between validations (0: only at the end)", min=0)
    bleu_sentences: int = opt(100, "validation sentences decoded greedily for BLEU/chrF", min=0)
    save_every: int = opt(200, "updates between last.pt saves (0: only at the end)", min=0)
    snapshot_tokens: int = opt(0, "> 0: also keep weights-only snapshots every this many target tokens", min=0)
    patience: int = opt(0, "validations without improvement before stopping (0: never)", min=0)
    select_metric: str = opt("loss", "which validation score picks best.pt", choices=SELECT_METRICS)
    seed: int = opt(1, "random seed (initial weights, batch order)")
    log_every: int = opt(20, "updates between train_log.jsonl lines", min=1)
    # Where and how it computes (mtmeta/hardware.py): auto = CUDA if present, else CPU;
    # bf16 autocast where the hardware runs bf16 natively (fp32 master weights), else fp32.
    device: str = opt("auto", _DEVICE_HELP, choices=DEVICES)
    precision: str = opt("auto", _PRECISION_HELP, choices=PRECISIONS)
    threads: int = opt(0, _THREADS_HELP, min=0)

    def validate(self, where: str = "train") -> None:
        check_fields(self, where)
        self.model.validate(f"{where}.model")
        if not re.match(r"^[a-z][a-z0-9_-]*$", self.strategy):
            raise ConfigError(f"{where}.strategy {self.strategy!r} is not a strategy name ('scratch' is `mtmeta adapt --scratch`)")
        self.meta.validate(f"{where}.meta")
        if self.select_metric != "loss" and self.bleu_sentences < 1:
            raise ConfigError(f"select_metric {self.select_metric} needs bleu_sentences >= 1 (translations to score)")
        if self.strategy == "transfer":
            check_lang(self.parent_lang, "transfer parent_lang")
        for lang in self.langs:
            check_lang(lang)
        if not (self.max_steps or self.max_minutes or self.max_train_tokens):
            raise ConfigError("set a budget: max_steps, max_minutes or max_train_tokens")


@dataclass
class AdaptConfig:
    checkpoint: str = opt("work/runs/multitask/best.pt", "pre-trained checkpoint ('': train from scratch on the adapt set)")
    lang: str = opt("ro", "the new source language")
    data: str = opt("work/prepared", "prepared folder holding the language's adapt and valid sets")
    train_files: list[str] = opt(help="your own adapt set instead: source file, English file", factory=list,
                                 nargs=2, metavar=("SRC", "EN"))
    valid_files: list[str] = opt(help="and its validation set: source file, English file", factory=list,
                                 nargs=2, metavar=("SRC", "EN"))
    output: str = opt("work/runs/adapt-ro", "run folder")
    tune: str = opt("all", "what fine-tuning updates: all, source embeddings + encoder, or source embeddings only", choices=TUNES)
    src_vocab_size: int = opt(
        4000, "pieces of the new language's vocabulary (sentencepiece stops below it when the text has fewer; "
              "ro: 4000 beat 1000 and 2000 on validation, results/pretrain/ro_adaptation_diagnostics.md)", min=8)
    max_tokens: int = opt(2000, "tokens per batch", min=16)
    lr: float = opt(3e-4, "peak learning rate", gt=0.0)
    warmup_steps: int = opt(50, "linear warmup updates", min=0)
    label_smoothing: float = opt(0.1, "label smoothing", min=0.0, max=0.99)
    clip_norm: float = opt(1.0, "gradient norm clip (0: none)", min=0.0)
    max_steps: int = opt(600, "budget: updates (0: none)", min=0)
    max_minutes: float = opt(0.0, "budget: minutes (0: none)", min=0.0)
    validate_every: int = opt(50, "updates between validations (0: only at the end)", min=0)
    bleu_sentences: int = opt(212, "validation sentences decoded for BLEU/chrF", min=0)
    patience: int = opt(4, "validations without improvement before stopping (0: never)", min=0)
    select_metric: str = opt("chrf", "which validation score picks best.pt (chrF is smoother than BLEU at low scores)",
                             choices=SELECT_METRICS)
    save_every: int = opt(0, "updates between last.pt saves (0: only at the end)", min=0)
    log_every: int = opt(10, "updates between train_log.jsonl lines", min=1)
    model: ModelConfig = opt(help="model size, only used from scratch (--preset NAME)", factory=ModelConfig)
    zero_shot: bool = opt(False, "no fine-tuning: only add the language's vocabulary (and ULR queries)")
    random_queries: bool = opt(False, "ULR ablation: random instead of aligned query vectors")
    vector_file: str = opt("", "ULR: your own fastText .vec for the new language")
    mono_files: list[str] = opt(help="ULR: extra monolingual text files for the new language's vectors", factory=list)
    dictionary: str = opt("", "ULR: X->English dictionary file ('': the pack's MUSE file when present; 'none': induced seeds only)")
    vector_epochs: int = opt(10, "ULR: fastText epochs for the new language", min=1)
    dictionary_projection: int = opt(
        3, "ULR: times each dictionary pair joins the adapt set as a one-word sentence pair in the "
           "co-occurrence part of the queries (0: off; results/ulr_vector_sweep.md)", min=0)
    dictionary_training: int = opt(
        1, "times each pair of that dictionary joins the adapt set as a one-word training pair (vocabulary, "
           "queries and fine-tuning all see it; 0: off; ro adapt-valid: results/pretrain/ro_adaptation_diagnostics.md)", min=0)
    # Against forgetting the source languages: an L2 pull toward the
    # pre-trained start (the paper's Gaussian prior) or EWC.
    regularizer: str = opt("none", "against forgetting: L2 pull toward the pre-trained weights, or EWC", choices=("none", "l2", "ewc"))
    reg_lambda: float = opt(0.0, "regularizer strength (added to the per-token loss)", min=0.0)
    fisher_batches: int = opt(20, "EWC: source-language training batches for the diagonal Fisher", min=0)
    forgetting_lang: str = opt("", "a source language whose held-out BLEU/chrF is reported before and after adapting")
    seed: int = opt(1, "random seed (vocabulary, new table, batch order)")
    device: str = opt("auto", _DEVICE_HELP, choices=DEVICES)
    precision: str = opt("auto", _PRECISION_HELP, choices=PRECISIONS)
    threads: int = opt(0, _THREADS_HELP, min=0)

    # The engine reads one settings object: these are the training budget and
    # schedule fields adaptation does not have (mtmeta/engine.py, EngineSettings).
    warmup_tokens = 0
    max_train_tokens = 0
    snapshot_tokens = 0

    def validate(self, where: str = "adapt") -> None:
        check_fields(self, where)
        check_lang(self.lang, "adapt lang")
        if self.regularizer != "none" and (self.reg_lambda <= 0 or not self.checkpoint):
            raise ConfigError("a regularizer needs reg_lambda > 0 and a pre-trained checkpoint")
        if self.regularizer == "ewc" and self.fisher_batches < 1:
            raise ConfigError("regularizer ewc needs fisher_batches >= 1")
        if self.forgetting_lang:
            check_lang(self.forgetting_lang, "forgetting_lang")
        if self.zero_shot and not self.checkpoint:
            raise ConfigError("zero_shot needs a pre-trained checkpoint")
        if self.select_metric != "loss" and self.bleu_sentences < 1:
            raise ConfigError(f"select_metric {self.select_metric} needs bleu_sentences >= 1 (translations to score)")
        if not self.checkpoint:
            self.model.validate(f"{where}.model")
        if self.max_steps < 1 and self.max_minutes <= 0 and not self.zero_shot:
            raise ConfigError("set a budget: max_steps or max_minutes (or zero_shot: true)")
        for what in ("train_files", "valid_files"):
            if getattr(self, what) and len(getattr(self, what)) != 2:
                raise ConfigError(f"{where}.{what} takes two paths: source side, English side")


@dataclass
class EvalConfig:
    lang: str = opt("ro", "source language of the test set")
    test: str = opt("", "test set name in the prepared folder ('': the language's test set)")
    beam: int = opt(4, "beam size", min=1)
    batch_sentences: int = opt(64, "sentences per batch", min=1, flag="--batch-size")
    max_sentences: int = opt(0, "score only the first N sentences (0: the full test set)", min=0)
    device: str = opt("auto", _DEVICE_HELP, choices=DEVICES)
    precision: str = opt("fp32", "fp32, bf16 or auto (decoding gains little from bf16)", choices=PRECISIONS)
    threads: int = opt(0, _THREADS_HELP, min=0)

    def validate(self, where: str = "evaluate") -> None:
        check_fields(self, where)


@dataclass
class RecipeConfig:
    """A whole experiment: prepare, train, adapt each target, evaluate."""

    name: str = opt("quick", "recipe name")
    workdir: str = opt("work/quick", "folder for everything the recipe makes")
    # A released model instead of prepare + train: adapt it to each target and score.
    pretrained: str = opt("", "a released model folder (or checkpoint) to adapt: no prepare, no train ('': prepare and train)")
    data: str = opt("", "with pretrained: the corpus pack (or prepared folder) holding each target's adapt, valid and test sets")
    show: int = opt(0, "print this many source / output / reference lines of each test set", min=0)
    prepare: PrepareConfig = opt(help="the prepare section", factory=PrepareConfig)
    train: TrainConfig = opt(help="the train section", factory=TrainConfig)
    adapt: AdaptConfig = opt(help="the adapt section (lang, data, checkpoint and output are set per target)", factory=AdaptConfig)
    targets: list[str] = opt(help="languages to adapt to and evaluate", factory=lambda: ["ro"])
    evaluate: EvalConfig = opt(help="the evaluate section", factory=EvalConfig)

    def validate(self) -> None:
        """The whole recipe, before anything runs: a bad adapt or evaluate
        setting fails now, not after preparing and training."""
        check_fields(self, "recipe")
        if self.pretrained:
            if not self.data:
                raise ConfigError("recipe: pretrained needs data (the corpus pack or prepared folder with the targets' sets)")
        else:
            self.prepare.validate()
            self.train.validate()
        self.evaluate.validate()
        if not self.targets:
            raise ConfigError("recipe: targets is empty (nothing would be adapted or scored)")
        for t in self.targets:
            check_lang(t, "recipe target")
            # checkpoint: the pre-trained model the recipe will have made
            dataclasses.replace(self.adapt, lang=t, checkpoint="<train>").validate("adapt")


@dataclass
class TierConfig:
    """One block of the comparison grid: every combination of its lists."""

    name: str = opt("", "tier name")
    strategies: list[str] = opt(help="names of `pretrain` entries, or 'scratch'", factory=list)
    targets: list[str] = opt(help="targets (empty: the grid's)", factory=list)
    tunes: list[str] = opt(help="adaptation options; best = the one picked on validation", factory=lambda: ["best"],
                           choices=TUNES + ("best",))
    sizes: list[int] = opt(help="adapt-set sizes; 0 = zero-shot; above the adapt set: + adapt-extra", factory=lambda: [800], min=0)
    draws: int = opt(1, "random subsets drawn for each size below the full adapt set", min=1)
    seeds: list[int] = opt(help="adaptation seeds", factory=lambda: [1])
    # Adapt intermediate models instead of the final ones: how results depend on the
    # pre-training budget, and ablations at a smaller budget with references at the same one.
    pretrain_tokens: list[int] = opt(
        help="adapt the runs' weights-only snapshots at these target-token counts (multiples of "
             "their snapshot_tokens) instead of their final models; empty: the final models",
        factory=list, min=1)

    def validate(self, strategies: list[str], targets: list[str]) -> None:
        where = f"tier {self.name!r}"
        check_fields(self, where)
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
        if not self.sizes:
            raise ConfigError(f"{where}: sizes must be a non-empty list of sentence counts >= 0")
        if not self.seeds:
            raise ConfigError(f"{where}: draws must be >= 1 and seeds non-empty")
        if 0 in self.sizes and "scratch" in self.strategies:
            raise ConfigError(f"{where}: size 0 (zero-shot) needs a pre-trained model; scratch has none")
        if self.pretrain_tokens and "scratch" in self.strategies:
            raise ConfigError(f"{where}: pretrain_tokens picks pre-training snapshots; scratch has none")
        if len(set(self.pretrain_tokens)) != len(self.pretrain_tokens):
            raise ConfigError(f"{where}: pretrain_tokens has repeated values")


@dataclass
class CompareConfig:
    """`mtmeta compare`: pre-training strategies x targets x adaptation
    options x adapt-set sizes x seeds, on one prepared folder.

    In YAML, `train` is the base every `pretrain` entry is merged over, so a
    strategy entry only says how it differs (and the budget is stated once)."""

    name: str = opt("compare", "comparison name")
    workdir: str = opt("work/compare", "checkpoints and logs (large, not committed)")
    results: str = opt("results/compare", "results.jsonl, hypotheses, summary, plots (committed)")
    prepare: PrepareConfig = opt(help="the prepare section", factory=PrepareConfig)
    train: TrainConfig = opt(help="the base every `pretrain` entry is merged over", factory=TrainConfig)
    pretrain: dict[str, TrainConfig] = opt(help="pre-training strategies by name", factory=dict)
    scratch_model: ModelConfig = opt(help="the scratch baseline's architecture", factory=ModelConfig)
    adapt: AdaptConfig = opt(help="adaptation of every cell", factory=AdaptConfig)
    evaluate: EvalConfig = opt(help="decoding of every cell", factory=lambda: EvalConfig(beam=1, batch_sentences=128))
    targets: list[str] = opt(help="target languages", factory=lambda: ["ro", "lv", "fi", "tr", "ko"])
    tiers: list[TierConfig] = opt(help="blocks of the grid", factory=list)
    full_size: int = opt(800, "sentences in each target's adapt set", min=1)
    # A strategy with no option runs of its own takes another's best option,
    # e.g. {transfer: multitask, metanmt-maml: metanmt}.
    best_tune_from: dict[str, str] = opt(help="a strategy without option runs takes another's best option", factory=dict)
    baseline: str = opt("multitask", "paired bootstrap: baseline ...")
    system: str = opt("metanmt", "... against this strategy, per language")
    bootstrap_samples: int = opt(1000, "paired bootstrap samples", min=1)
    equal_budget: bool = opt(True, "refuse pretrain entries with different budgets")

    def validate(self) -> None:
        check_fields(self, "compare")
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
        # Equal budget: every run whose final model a tier adapts (or that no tier uses) gets
        # the same budget. A run used only through snapshots (an ablation at a smaller budget)
        # may stop earlier: its tiers compare every strategy at the same snapshot tokens.
        used_by = {name: [t for t in self.tiers if name in t.strategies] for name in self.pretrain}
        snapshot_only = {name for name, tiers in used_by.items() if tiers and all(t.pretrain_tokens for t in tiers)}
        budgets = {name: (tr.max_train_tokens, tr.max_minutes, tr.max_steps) for name, tr in self.pretrain.items()
                   if name not in snapshot_only}
        if self.equal_budget and len(set(budgets.values())) > 1:
            raise ConfigError(
                "compare: pre-training strategies must get the same budget (max_train_tokens, max_minutes, max_steps): "
                + ", ".join(f"{k}={v}" for k, v in budgets.items())
                + "; set equal_budget: false to allow it"
            )
        self.scratch_model.validate("compare.scratch_model")
        if not self.targets:
            raise ConfigError("compare: no targets")
        for t in self.targets:
            check_lang(t, "compare target")
            dataclasses.replace(self.adapt, lang=t, checkpoint="<pretrained>").validate("adapt")
        if not self.tiers:
            raise ConfigError("compare: no tiers")
        if len({t.name for t in self.tiers}) != len(self.tiers):
            raise ConfigError("compare: tier names must be unique")
        for tier in self.tiers:
            tier.validate(list(self.pretrain), self.targets)
            for name in tier.strategies if tier.pretrain_tokens else []:
                tr = self.pretrain[name]
                for n in tier.pretrain_tokens:
                    if not tr.snapshot_tokens or n % tr.snapshot_tokens:
                        raise ConfigError(
                            f"tier {tier.name!r}: pretrain_tokens {n} is not a multiple of the snapshot_tokens of {name!r} "
                            f"({tr.snapshot_tokens or 'none kept'})")
                    if not tr.max_train_tokens or n > tr.max_train_tokens:
                        raise ConfigError(
                            f"tier {tier.name!r}: pretrain_tokens {n} is beyond the budget of {name!r} "
                            f"(max_train_tokens {tr.max_train_tokens or 'not set'})")
        for k, v in self.best_tune_from.items():
            if k not in self.pretrain or v not in self.pretrain:
                raise ConfigError(f"best_tune_from: {k!r} -> {v!r}: both must be `pretrain` entries")
        self.evaluate.validate()


def read_yaml(path: str | Path, what: str = "config file"):
    """Parsed YAML, or a one-line ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8 at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_compare_yaml(path: str | Path, overrides: dict | None = None) -> CompareConfig:
    """A compare recipe: each `pretrain` entry is merged over `train`.
    `overrides`: a nested mapping merged over the file first (--set)."""
    path = Path(path)
    data = read_yaml(path, "recipe file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping")
    data = _deep_merge(data, overrides or {})
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
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8 (load_yaml then says so)
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
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path, cls: type = RecipeConfig, overrides: dict | None = None):
    path = Path(path)
    data = read_yaml(path, "recipe file")
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{path.name}: expected a mapping, got {type(data).__name__}")
        data = _deep_merge(data, overrides)
    cfg = from_dict(cls, data, where=path.name)
    cfg.validate()
    return cfg
