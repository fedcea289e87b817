"""The `mtmeta` command line.

Each command reads its settings from a YAML file (`--config`, a recipe or
the command's own section) and lets flags override them; the merged result
is validated before anything runs. Problems with input are one line on
stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import config as C
from .errors import ConfigError, DataError, MtmetaError


def _section(path: str | None, cls: type, key: str):
    """The `key` section of a recipe file, or the whole file if it has no
    such section; defaults when no file is given."""
    if not path:
        return cls()
    p = Path(path)
    data = C.read_yaml(p) or {}
    if isinstance(data, dict) and key in data:
        data = data[key]
    return C.from_dict(cls, data, where=f"{p.name}:{key}")


def _override(cfg, **values):
    changes = {k: v for k, v in values.items() if v is not None}
    return dataclasses.replace(cfg, **changes)


def _add_compute_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", choices=list(C.DEVICES), help="auto: CUDA when a GPU is visible, else CPU (default: the config's, auto)")
    s.add_argument("--precision", choices=list(C.PRECISIONS), help="auto: bf16 autocast where the hardware runs it natively, else fp32")
    s.add_argument("--threads", type=int, help="CPU threads (0: every core; 1 when another job shares a 2-core machine)")


def _compute(args) -> dict:
    return {k: getattr(args, k, None) for k in ("device", "precision", "threads")}


def _quiet(args) -> bool:
    return bool(getattr(args, "quiet", False))


def _log(args):
    return (lambda *_: None) if _quiet(args) else (lambda msg: print(msg, file=sys.stderr, flush=True))


# --- commands ----------------------------------------------------------------


def cmd_prepare(args) -> int:
    from data_prep.prepare import prepare

    cfg = _section(args.config, C.PrepareConfig, "prepare")
    if args.pack:
        cfg.sources = [C.SourceSpec(type="pack", path=args.pack)]
    for spec in args.source or []:
        cfg.sources.append(C.from_dict(C.SourceSpec, _kv(spec), where="--source"))
    cfg = _override(
        cfg,
        output=args.output,
        train_langs=args.train_langs,
        target_langs=args.target_langs,
        vocab_mode=args.vocab_mode,
        max_pairs_per_lang=args.max_pairs_per_lang,
        src_vocab_size=args.src_vocab_size,
        tgt_vocab_size=args.tgt_vocab_size,
        ulr_vectors=args.ulr_vectors or None,
        vector_dim=args.vector_dim,
        num_universal=args.num_universal,
    )
    for spec in args.vectors or []:
        lang, _, path = spec.partition("=")
        cfg.vector_files[lang] = path
    for spec in args.mono or []:
        lang, _, path = spec.partition("=")
        cfg.mono_files.setdefault(lang, []).append(path)
    for spec in args.dictionary or []:
        lang, _, path = spec.partition("=")
        cfg.dictionaries[lang] = path
    summary = prepare(cfg, log=_log(args))
    print(json.dumps({k: summary[k] for k in ("train_langs", "target_langs", "totals", "contamination")}, indent=1))
    return 0


def _kv(spec: str) -> dict:
    """'type=hf,path=x,lang=ro' -> dict (for --source)."""
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ConfigError(f"--source {spec!r}: expected key=value pairs separated by commas")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def cmd_train(args) -> int:
    from .training import train

    cfg = _section(args.config, C.TrainConfig, "train")
    if args.preset:
        cfg.model = dataclasses.replace(C.MODEL_PRESETS[args.preset])
    if args.embedding:
        cfg.model = dataclasses.replace(cfg.model, embedding=args.embedding)
    if args.meta_variant:
        cfg.meta = dataclasses.replace(cfg.meta, variant=args.meta_variant)
    if args.meta_valid_lang:
        cfg.meta = dataclasses.replace(cfg.meta, meta_valid_lang=args.meta_valid_lang)
    cfg = _override(
        cfg,
        data=args.data,
        output=args.output,
        strategy=args.strategy,
        langs=args.langs,
        parent_lang=args.parent_lang,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        max_train_tokens=args.max_train_tokens,
        max_tokens=args.max_tokens,
        lr=args.lr,
        seed=args.seed,
        validate_every=args.validate_every,
        save_every=args.save_every,
        **_compute(args),
    )
    # Under torchrun (train joins the workers' process group): rank 0 prints the result.
    from . import distributed

    try:
        result = train(cfg, log=_log(args), progress=not _quiet(args), resume=not args.restart)
        if distributed.is_main():
            print(json.dumps(result, indent=1))
    finally:
        distributed.shutdown()
    return 0


def cmd_adapt(args) -> int:
    from .adaptation import adapt

    cfg = _section(args.config, C.AdaptConfig, "adapt")
    if args.scratch:
        cfg.checkpoint = ""
    if args.preset:
        cfg.model = dataclasses.replace(C.MODEL_PRESETS[args.preset])
    cfg = _override(
        cfg,
        checkpoint=args.checkpoint,
        lang=args.lang,
        data=args.data,
        output=args.output,
        tune=args.tune,
        train_files=args.train_files,
        valid_files=args.valid_files,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        max_tokens=args.max_tokens,
        lr=args.lr,
        seed=args.seed,
        validate_every=args.validate_every,
        patience=args.patience,
        zero_shot=args.zero_shot or None,
        random_queries=args.random_queries or None,
        vector_file=args.vector_file,
        mono_files=args.mono_files,
        dictionary=args.dictionary,
        regularizer=args.regularizer,
        reg_lambda=args.reg_lambda,
        fisher_batches=args.fisher_batches,
        forgetting_lang=args.forgetting_lang,
        **_compute(args),
    )
    result = adapt(cfg, log=_log(args), progress=not _quiet(args), resume=not args.restart)
    print(json.dumps(result, indent=1))
    return 0


def _translator(args, lang: str):
    """The engine `translate` asked for, as a function of the input lines;
    an unusable model or setting fails here, before any input is read."""
    engine = getattr(args, "engine", "native")
    if engine == "ctranslate2":
        from .export import open_export

        path = args.model or args.checkpoint
        if not path:
            raise ConfigError("--engine ctranslate2 needs --model DIR (a folder written by `mtmeta export`)")
        model = open_export(path, compute_type=args.compute_type or "auto")
        model.src_vocab(lang)  # unknown language: fail before reading input
        return lambda lines, progress: model.translate(lang, lines, beam=args.beam, batch_sentences=args.batch_size, progress=progress)
    if args.model:
        raise ConfigError("--model is the exported folder for --engine ctranslate2; the native engine reads --checkpoint FILE")
    if args.compute_type:
        raise ConfigError("--compute-type applies to --engine ctranslate2 only")
    if not args.checkpoint:
        raise ConfigError("translate needs --checkpoint FILE (or --engine ctranslate2 --model DIR)")
    import torch

    from .checkpoint import load_bundle
    from .decoding import translate
    from .hardware import setup

    bundle, _ = load_bundle(args.checkpoint)
    bundle.src_vocab(lang)  # unknown language: fail before reading input
    if not args.no_fold:
        bundle.model.fold_embeddings()
    hw = setup("auto", "fp32", torch.get_num_threads())  # a GPU when there is one; torch's thread count as it is
    return lambda lines, progress: translate(bundle, lang, lines, beam=args.beam, batch_sentences=args.batch_size, progress=progress, hw=hw)


def cmd_translate(args) -> int:
    from data_prep.sources import read_lines

    C.check_lang(args.lang, "--lang")
    run = _translator(args, args.lang)
    if args.input and args.input != "-":
        lines = read_lines(args.input)
        where = args.input
    else:
        try:
            lines = [line.rstrip("\r\n") for line in sys.stdin]
        except UnicodeDecodeError as e:
            raise DataError(f"stdin: not UTF-8 (byte {e.start})") from None
        where = "stdin"
    if not lines:
        raise DataError(f"{where}: no input sentences")
    hyps = run(lines, not _quiet(args))
    text = "\n".join(hyps) + "\n"
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    else:
        sys.stdout.write(text)
    return 0


def cmd_export(args) -> int:
    from .export import export_ctranslate2

    result = export_ctranslate2(args.checkpoint, args.output, quantization=args.quantization, force=args.force, log=_log(args))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


def cmd_evaluate(args) -> int:
    from evaluation.scoring import score_files, write_json

    if args.hyp or args.ref:
        if not (args.hyp and args.ref):
            raise ConfigError("--hyp and --ref go together")
        result = score_files(args.hyp, args.ref)
        if args.output:
            write_json(result, args.output)
    else:
        from .evaluate import evaluate_checkpoint

        engine = args.engine
        if engine == "native" and (args.model or args.compute_type):
            raise ConfigError(f"{'--model' if args.model else '--compute-type'} applies to --engine ctranslate2 only (the native engine reads --checkpoint FILE)")
        model = (args.model or args.checkpoint) if engine == "ctranslate2" else args.checkpoint
        if not (model and args.lang):
            raise ConfigError("evaluate needs --checkpoint FILE (or --engine ctranslate2 --model DIR) and --lang, or --hyp and --ref")
        C.check_lang(args.lang, "--lang")
        hw = None
        if engine == "native":
            import torch

            from .hardware import setup

            hw = setup("auto", "fp32", torch.get_num_threads())
        result = evaluate_checkpoint(
            model,
            args.lang,
            args.data,
            args.output_dir,
            test=args.test,
            beam=args.beam,
            batch_sentences=args.batch_size,
            max_sentences=args.max_sentences or 0,
            progress=not _quiet(args),
            engine=engine,
            compute_type=args.compute_type or "auto",
            hw=hw,
        )
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


def cmd_compare(args) -> int:
    from .compare import load_rows, run_compare

    cfg = C.load_compare_yaml(args.file)
    _override_sections(cfg, args)
    if getattr(args, "report_only", False):
        from evaluation.compare_report import write_report

        rows = load_rows(Path(cfg.results) / "results.jsonl")
        if not rows:
            raise DataError(f"{cfg.results}/results.jsonl holds no finished cells yet")
        print(json.dumps(write_report(cfg, rows), indent=1))
        return 0
    if getattr(args, "pretrain_only", None):
        from .compare import Comparison

        unknown = [n for n in args.pretrain_only if n not in cfg.pretrain]
        if unknown:
            raise ConfigError(f"--pretrain-only {unknown}: not `pretrain` entries of {args.file} ({', '.join(cfg.pretrain)})")
        comparison = Comparison(cfg, log=_log(args), progress=not _quiet(args))
        print(json.dumps({n: comparison.ensure_pretrained(n) for n in args.pretrain_only}, indent=1))
        return 0
    if getattr(args, "check_steps", None):
        from .compare import check_recipe

        print(json.dumps(check_recipe(cfg, args.check_steps, log=_log(args)), indent=1))
        return 0
    run_compare(cfg, log=_log(args), progress=not _quiet(args), dry_run=getattr(args, "dry_run", False))
    return 0


def _override_sections(cfg, args) -> None:
    """--device/--precision/--threads of compare and recipe apply to every section that computes."""
    changes = {k: v for k, v in _compute(args).items() if v is not None}
    if not changes:
        return
    sections = [cfg.train, cfg.adapt, cfg.evaluate] + list(getattr(cfg, "pretrain", {}).values())
    for section in sections:
        for k, v in changes.items():
            setattr(section, k, v)
    cfg.validate()


def cmd_recipe(args) -> int:
    from .recipe import run_recipe

    if C.is_compare_recipe(args.file):  # a grid of strategies: `mtmeta compare`
        return cmd_compare(args)
    cfg = C.load_yaml(args.file, C.RecipeConfig)
    _override_sections(cfg, args)
    run_recipe(cfg, log=_log(args), progress=not _quiet(args))
    return 0


# --- parser --------------------------------------------------------------------


def _engine_arguments(s) -> None:
    s.add_argument("--engine", choices=["native", "ctranslate2"], default="native",
                   help="native: fairseq beam search on --checkpoint; ctranslate2: CTranslate2 on --model (see `mtmeta export`)")
    s.add_argument("--model", help="with --engine ctranslate2: the folder written by `mtmeta export`")
    s.add_argument("--compute-type", choices=["auto", "int8", "int16", "float32", "bfloat16"],
                   help="with --engine ctranslate2: CTranslate2 compute type (default auto); refused where the hardware lacks it")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtmeta", description="Low-resource X->English translation: prepare, train, adapt, translate, evaluate.")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="clean, decontaminate and tokenise corpora into training tasks")
    s.add_argument("--config", help="YAML with a 'prepare' section (a recipe) or PrepareConfig fields")
    s.add_argument("--pack", help="corpus folder in the offline pack layout (replaces the config's sources)")
    s.add_argument("--source", action="append", help="extra source, e.g. type=hf,path=DIR,lang=ro,role=adapt")
    s.add_argument("--output")
    s.add_argument("--train-langs", nargs="+")
    s.add_argument("--target-langs", nargs="+")
    s.add_argument("--vocab-mode", choices=["per_language", "joint"])
    s.add_argument("--max-pairs-per-lang", type=int)
    s.add_argument("--src-vocab-size", type=int)
    s.add_argument("--tgt-vocab-size", type=int)
    s.add_argument("--ulr-vectors", action="store_true", help="build aligned vectors for the universal lexical representation")
    s.add_argument("--vector-dim", type=int)
    s.add_argument("--num-universal", type=int)
    s.add_argument("--vectors", action="append", metavar="LANG=FILE.vec", help="your own fastText vectors for a language (or en)")
    s.add_argument("--mono", action="append", metavar="LANG=FILE", help="extra monolingual text for a language's vectors")
    s.add_argument("--dictionary", action="append", metavar="LANG=FILE", help="ULR: a LANG->English dictionary ('source english' pairs) to seed the alignment")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("train", help="pre-train on the source pairs (resumes from OUTPUT/last.pt)")
    s.add_argument("--config")
    s.add_argument("--data")
    s.add_argument("--output")
    s.add_argument("--strategy", choices=["multitask", "transfer", "metanmt"])
    s.add_argument("--meta-variant", choices=["fomaml", "maml", "reptile", "metasgd"])
    s.add_argument("--meta-valid-lang", help="MetaNMT: fine-tune a copy on this language's adapt set to pick checkpoints")
    s.add_argument("--preset", choices=list(C.MODEL_PRESETS))
    s.add_argument("--embedding", choices=["tables", "ulr"], help="source embedding: per-language tables or ULR")
    s.add_argument("--langs", nargs="+")
    s.add_argument("--parent-lang")
    s.add_argument("--max-steps", type=int)
    s.add_argument("--max-minutes", type=float)
    s.add_argument("--max-train-tokens", type=int)
    s.add_argument("--max-tokens", type=int, help="tokens per batch")
    s.add_argument("--lr", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--validate-every", type=int)
    s.add_argument("--save-every", type=int)
    s.add_argument("--restart", action="store_true", help="ignore OUTPUT/last.pt and start over")
    _add_compute_flags(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("adapt", help="fine-tune on a new language's small parallel set")
    s.add_argument("--config")
    s.add_argument("--checkpoint")
    s.add_argument("--scratch", action="store_true", help="no pre-trained model: train on the adapt set alone")
    s.add_argument("--preset", choices=list(C.MODEL_PRESETS), help="model size with --scratch")
    s.add_argument("--lang")
    s.add_argument("--data", help="prepared folder holding the language's adapt and valid sets")
    s.add_argument("--train-files", nargs=2, metavar=("SRC", "EN"))
    s.add_argument("--valid-files", nargs=2, metavar=("SRC", "EN"))
    s.add_argument("--output")
    s.add_argument("--tune", choices=["all", "emb_enc", "emb"])
    s.add_argument("--max-steps", type=int)
    s.add_argument("--max-minutes", type=float)
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--lr", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--validate-every", type=int)
    s.add_argument("--patience", type=int)
    s.add_argument("--zero-shot", action="store_true", help="no fine-tuning: only add the language's vocabulary (and ULR queries)")
    s.add_argument("--random-queries", action="store_true", help="ULR ablation: random query vectors for the new language")
    s.add_argument("--vector-file", help="ULR: your own fastText .vec for the new language")
    s.add_argument("--mono-files", nargs="+", help="ULR: monolingual text files to train the new language's vectors on")
    s.add_argument("--dictionary", help="ULR: a LANG->English dictionary file ('source english' pairs; 'none': induced seeds only)")
    s.add_argument("--regularizer", choices=["none", "l2", "ewc"], help="against forgetting: L2 pull toward the pre-trained weights, or EWC")
    s.add_argument("--reg-lambda", type=float, help="regularizer strength (added to the per-token loss)")
    s.add_argument("--fisher-batches", type=int, help="EWC: source-language training batches for the diagonal Fisher")
    s.add_argument("--forgetting-lang", help="a source language whose held-out BLEU/chrF is reported before and after adapting")
    s.add_argument("--restart", action="store_true")
    _add_compute_flags(s)
    s.set_defaults(func=cmd_adapt)

    s = sub.add_parser("translate", help="translate stdin or a file into English")
    s.add_argument("--checkpoint", help="mtmeta checkpoint (native engine)")
    s.add_argument("--lang", required=True)
    s.add_argument("--input", help="file (default: stdin)")
    s.add_argument("--output", help="file (default: stdout)")
    s.add_argument("--beam", type=int, default=4)
    s.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    s.add_argument("--no-fold", action="store_true", help="keep ULR live instead of folding it into tables (slower; for checks)")
    _engine_arguments(s)
    s.set_defaults(func=cmd_translate)

    s = sub.add_parser("evaluate", help="score a checkpoint on a test set, or hypothesis/reference files")
    s.add_argument("--checkpoint")
    s.add_argument("--lang")
    s.add_argument("--data", default="work/prepared")
    s.add_argument("--test", help="test set name (default: the language's test set)")
    s.add_argument("--output-dir", default="work/eval")
    s.add_argument("--beam", type=int, default=4)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--max-sentences", type=int)
    s.add_argument("--hyp")
    s.add_argument("--ref")
    s.add_argument("--output", help="with --hyp/--ref: JSON file to write")
    _engine_arguments(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="write a checkpoint as a CTranslate2 model folder (fast decoding: --engine ctranslate2)")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--format", choices=["ctranslate2"], default="ctranslate2")
    s.add_argument("--output", required=True, help="folder to write (refuses a non-empty folder that is not an earlier export)")
    s.add_argument("--quantization", choices=["int8", "int16", "float32", "bfloat16"], default="float32",
                   help="weights as stored; --compute-type can still pick another type at translation time")
    s.add_argument("--force", action="store_true", help="replace an earlier export in --output")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("recipe", help="run an experiment recipe")
    rs = s.add_subparsers(dest="action", required=True)
    r = rs.add_parser("run", help="prepare, train, adapt and evaluate as the recipe says")
    r.add_argument("file")
    r.add_argument("--dry-run", action="store_true", help="comparison recipes: list the cells and which are done")
    _add_compute_flags(r)
    r.set_defaults(func=cmd_recipe)

    s = sub.add_parser("compare", help="run a comparison grid: strategies x targets x options x sizes x seeds (resumable)")
    s.add_argument("file", help="recipe with `pretrain` and `tiers` (e.g. recipes/compare.yaml)")
    s.add_argument("--dry-run", action="store_true", help="list the cells and which are done; run nothing")
    s.add_argument("--report-only", action="store_true", help="rebuild summary.md and the plots from results.jsonl")
    s.add_argument("--pretrain-only", nargs="+", metavar="NAME", help="only pre-train these `pretrain` entries (in this order), where the grid will reuse them")
    s.add_argument("--check-steps", type=int, metavar="N", help="only check the recipe starts: N steps of each pre-training strategy, one short adaptation, a few translations")
    _add_compute_flags(s)
    s.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MtmetaError as e:
        print(f"mtmeta: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtmeta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
