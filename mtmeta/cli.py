"""The `mtmeta` command line.

Each command reads its settings from a YAML file (`--config`, a recipe or
the command's own section) and lets flags override them; the merged result
is validated before anything runs. Problems with input are one line on
stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
from pathlib import Path

from . import config as C
from .cliargs import add_config_arguments, apply_arguments, given, parse_sets
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


def _with_preset(model: C.ModelConfig, preset: str | None) -> C.ModelConfig:
    """--preset NAME: the preset's sizes; the embedding (and its temperature) stay
    what the config says, so `embedding: ulr` is not dropped by a size preset."""
    if not preset:
        return model
    return dataclasses.replace(C.MODEL_PRESETS[preset], embedding=model.embedding, ulr_tau=model.ulr_tau)


def _check_output_dir(path: str | Path, flag: str) -> None:
    """A folder the run can create or write into: checked before any work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p}: exists and is not a folder; choose a folder path")
    _check_writable_parent(p if p.is_dir() else p.parent, flag, p)


def _check_output_file(path: str | Path, flag: str) -> None:
    """A file the command can write: its folder exists and is writable, and the
    path is not a folder. Checked before decoding, not after."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", "\\")) or p.name in ("", ".", ".."):
        raise ConfigError(f"{flag} {path}: is a folder; give a file path")
    if not p.parent.is_dir():
        raise ConfigError(f"{flag} {path}: folder {p.parent} does not exist; create it first")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{flag} {path}: not writable")
    _check_writable_parent(p.parent, flag, p)


def _check_writable_parent(folder: Path, flag: str, target: Path) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"{flag} {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {target}: cannot write in {existing} (permission denied or read-only)")


def _compute(args) -> dict:
    """--device/--precision/--threads of `recipe run` and `compare` (every computing section)."""
    values = given(args)
    return {k: values.get(k) for k in ("device", "precision", "threads")}


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
    cfg = apply_arguments(cfg, args)
    cfg.validate()
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
    from .training import check_train, train

    cfg = _section(args.config, C.TrainConfig, "train")
    cfg = dataclasses.replace(cfg, model=_with_preset(cfg.model, args.preset))
    cfg = apply_arguments(cfg, args)
    check_train(cfg)
    _check_output_dir(cfg.output, "--output")
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
    cfg = dataclasses.replace(cfg, model=_with_preset(cfg.model, args.preset))
    cfg = apply_arguments(cfg, args)
    cfg.validate()
    _check_output_dir(cfg.output, "--output")
    result = adapt(cfg, log=_log(args), progress=not _quiet(args), resume=not args.restart)
    print(json.dumps(result, indent=1))
    return 0


def _decode_settings(args) -> C.EvalConfig:
    """translate/evaluate: the decoding settings of the command line (EvalConfig)."""
    ev = apply_arguments(C.EvalConfig(), args)
    ev.validate("evaluate")
    return ev


def _translator(args, ev: C.EvalConfig):
    """The engine `translate` asked for, as a function of the input lines;
    an unusable model or setting fails here, before any input is read."""
    lang = ev.lang
    engine = getattr(args, "engine", "native")
    if engine == "ctranslate2":
        from .export import open_export

        path = args.model or args.checkpoint
        if not path:
            raise ConfigError("--engine ctranslate2 needs --model DIR (a folder written by `mtmeta export`)")
        model = open_export(path, compute_type=args.compute_type or "auto")
        model.src_vocab(lang)  # unknown language: fail before reading input
        return lambda lines, progress: model.translate(lang, lines, beam=ev.beam, batch_sentences=ev.batch_sentences, progress=progress)
    if args.model:
        raise ConfigError("--model is the exported folder for --engine ctranslate2; the native engine reads --checkpoint FILE")
    if args.compute_type:
        raise ConfigError("--compute-type applies to --engine ctranslate2 only")
    if not args.checkpoint:
        raise ConfigError("translate needs --checkpoint FILE (or --engine ctranslate2 --model DIR)")
    from .checkpoint import load_bundle
    from .decoding import translate
    from .hardware import setup

    bundle, _ = load_bundle(args.checkpoint)
    bundle.src_vocab(lang)  # unknown language: fail before reading input
    if not args.no_fold:
        bundle.model.fold_embeddings()
    hw = setup(ev.device, ev.precision, ev.threads)  # defaults: a GPU when there is one, fp32, torch's thread count as it is
    return lambda lines, progress: translate(bundle, lang, lines, beam=ev.beam, batch_sentences=ev.batch_sentences, progress=progress, hw=hw)


def cmd_translate(args) -> int:
    from data_prep.cleaning import normalize

    from .safe_io import atomic_write_text, read_text_lines, write_stdout

    if "lang" not in given(args):
        raise ConfigError("translate needs --lang (the source language)")
    ev = _decode_settings(args)
    C.check_lang(ev.lang, "--lang")
    if args.output:
        _check_output_file(args.output, "--output")
    run = _translator(args, ev)
    # The one text reader (as prepare and adapt read): strict UTF-8 naming the line,
    # CR-only files split, NUL removed (said on stderr); then the normalisation the
    # model's source text had in prepare (NFKC, control characters, whitespace).
    if args.input and args.input != "-":
        lines = read_text_lines(args.input)
    else:
        # Bytes, not sys.stdin's text: its surrogateescape would let bad bytes through.
        stdin = getattr(sys.stdin, "buffer", None)
        data = stdin.read() if stdin is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
        lines = read_text_lines(data, where="stdin")
    lines = [normalize(line) for line in lines]
    hyps = run(lines, not _quiet(args))
    text = "\n".join(hyps) + "\n"
    if args.output:  # temp file, fsync, rename: a full disk leaves no partial file
        atomic_write_text(args.output, text, "translations")
    else:
        write_stdout(text)  # checked: a short write is an error, not exit 0
    return 0


def cmd_export(args) -> int:
    from .export import export_ctranslate2, export_release

    if args.format == "release":
        if args.quantization:
            raise ConfigError("--quantization applies to --format ctranslate2; a release stores --dtype (default float16)")
        import shlex

        command = "mtmeta " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if Path(sys.argv[0]).name == "mtmeta" else ""
        result = export_release(args.checkpoint, args.output, dtype=args.dtype or "float16", force=args.force,
                                data=args.data, command=command or f"mtmeta export --format release --checkpoint {args.checkpoint} --output {args.output}",
                                log=_log(args))
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return 0
    if args.dtype or args.data:
        raise ConfigError(f"{'--dtype' if args.dtype else '--data'} applies to --format release")
    result = export_ctranslate2(args.checkpoint, args.output, quantization=args.quantization or "float32", force=args.force, log=_log(args))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


def cmd_evaluate(args) -> int:
    from .scoring import score_files, write_json

    if args.hyp or args.ref:
        if not (args.hyp and args.ref):
            raise ConfigError("--hyp and --ref go together")
        if args.output:
            _check_output_file(args.output, "--output")
        result = score_files(args.hyp, args.ref)
        if args.output:
            write_json(result, args.output)
    else:
        from .score_testset import evaluate_checkpoint

        engine = args.engine
        if engine == "native" and (args.model or args.compute_type):
            raise ConfigError(f"{'--model' if args.model else '--compute-type'} applies to --engine ctranslate2 only (the native engine reads --checkpoint FILE)")
        model = (args.model or args.checkpoint) if engine == "ctranslate2" else args.checkpoint
        if not (model and "lang" in given(args)):
            raise ConfigError("evaluate needs --checkpoint FILE (or --engine ctranslate2 --model DIR) and --lang, or --hyp and --ref")
        ev = _decode_settings(args)
        C.check_lang(ev.lang, "--lang")
        _check_output_dir(args.output_dir, "--output-dir")
        hw = None
        if engine == "native":
            from .hardware import setup

            hw = setup(ev.device, ev.precision, ev.threads)
        result = evaluate_checkpoint(
            model,
            ev.lang,
            args.data,
            args.output_dir,
            test=ev.test or None,
            beam=ev.beam,
            batch_sentences=ev.batch_sentences,
            max_sentences=ev.max_sentences,
            progress=not _quiet(args),
            engine=engine,
            compute_type=args.compute_type or "auto",
            hw=hw,
        )
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


def cmd_compare(args) -> int:
    cfg = C.load_compare_yaml(args.file, overrides=parse_sets(getattr(args, "set", None)))
    _override_sections(cfg, args)
    with _work_lock(cfg, args):
        return _compare_command(cfg, args)


def _compare_command(cfg, args) -> int:
    # The CLI is the top floor: it runs the grid (mtmeta/compare.py) and then writes the
    # report from its rows (evaluation/compare_report.py, the layer above the runner).
    from evaluation.compare_report import write_report

    from .compare import run_compare
    from .compare_plan import load_rows

    if getattr(args, "report_only", False):
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
        print(json.dumps(comparison.pretrain_only(args.pretrain_only), indent=1))
        return 0
    if getattr(args, "check_steps", None):
        from .compare import check_recipe

        print(json.dumps(check_recipe(cfg, args.check_steps, log=_log(args)), indent=1))
        return 0
    dry_run = getattr(args, "dry_run", False)
    rows = run_compare(cfg, log=_log(args), progress=not _quiet(args), dry_run=dry_run, ready_only=getattr(args, "ready_only", False))
    if rows and not dry_run:
        from .safe_io import waiting_lock

        # Several grid processes may end at different times: one report at a time, each
        # from every row written so far, so the last one to finish leaves the full report.
        with waiting_lock(Path(cfg.results) / ".report.lock"):
            paths = write_report(cfg, load_rows(Path(cfg.results) / "results.jsonl"), log=_log(args))
        _log(args)(f"summary: {paths['summary']}")
    return 0


def _work_lock(cfg, args):
    """One run at a time in a recipe's work folder. Not for a comparison grid
    (mtmeta/compare.py: several processes share one, each cell and each
    pre-training under its own folder's lock, the rows under a lock of theirs),
    nor for --dry-run and --report-only (they only read it)."""
    import contextlib

    from .safe_io import OutputLock

    grid = C.is_compare_recipe(args.file) and not getattr(args, "check_steps", None)
    if grid or getattr(args, "dry_run", False) or getattr(args, "report_only", False):
        return contextlib.nullcontext()
    return OutputLock(cfg.workdir, "work folder")


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
    cfg = C.load_yaml(args.file, C.RecipeConfig, overrides=parse_sets(getattr(args, "set", None)))
    _override_sections(cfg, args)
    from .training import check_train

    if not cfg.pretrained:  # a released model is adapted as it is: nothing is trained
        check_train(cfg.train)  # the strategy name too, before prepare runs
    with _work_lock(cfg, args):
        run_recipe(cfg, log=_log(args), progress=not _quiet(args))
    return 0


# --- parser --------------------------------------------------------------------


def _engine_arguments(s) -> None:
    s.add_argument("--engine", choices=["native", "ctranslate2"], default="native",
                   help="native: fairseq beam search on --checkpoint; ctranslate2: CTranslate2 on --model (see `mtmeta export`)")
    s.add_argument("--model", help="with --engine ctranslate2: the folder written by `mtmeta export`")
    s.add_argument("--compute-type", choices=["auto", "int8", "int16", "float32", "bfloat16"],
                   help="with --engine ctranslate2: CTranslate2 compute type (default auto); refused where the hardware lacks it")


def _recipe_arguments(s) -> None:
    """recipe run / compare: where every section computes, and any field by its path."""
    add_config_arguments(s, C.TrainConfig, only=("device", "precision", "threads"))
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override any recipe field before validation, e.g. --set train.max_minutes=5 "
                        "--set adapt.tune=emb (repeatable; values are YAML)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtmeta", description="Low-resource X->English translation: prepare, train, adapt, translate, evaluate.")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")
    sub = p.add_subparsers(dest="command", required=True)

    # Config fields are generated from the dataclasses (mtmeta/cliargs.py): each has its
    # help text and default; only what is not a config field is declared here.
    s = sub.add_parser("prepare", help="clean, decontaminate and tokenise corpora into training tasks")
    s.add_argument("--config", help="YAML with a 'prepare' section (a recipe) or PrepareConfig fields")
    s.add_argument("--pack", help="corpus folder in the offline pack layout (replaces the config's sources)")
    s.add_argument("--source", action="append", help="extra source, e.g. type=hf,path=DIR,lang=ro,role=adapt")
    add_config_arguments(s, C.PrepareConfig)
    s.set_defaults(func=cmd_prepare)

    from .strategies import PRETRAIN_STRATEGIES

    s = sub.add_parser("train", help="pre-train on the source pairs (resumes from OUTPUT/last.pt)")
    s.add_argument("--config", help="YAML with a 'train' section (a recipe) or TrainConfig fields")
    s.add_argument("--preset", choices=list(C.MODEL_PRESETS), help="model size (keeps the config's embedding)")
    s.add_argument("--restart", action="store_true", help="ignore OUTPUT/last.pt and start over")
    add_config_arguments(s, C.TrainConfig, choices={"strategy": list(PRETRAIN_STRATEGIES)})
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("adapt", help="fine-tune on a new language's small parallel set")
    s.add_argument("--config", help="YAML with an 'adapt' section (a recipe) or AdaptConfig fields")
    s.add_argument("--scratch", action="store_true", help="no pre-trained model: train on the adapt set alone")
    s.add_argument("--preset", choices=list(C.MODEL_PRESETS), help="model size with --scratch")
    s.add_argument("--restart", action="store_true", help="ignore OUTPUT/last.pt and start over")
    add_config_arguments(s, C.AdaptConfig)
    s.set_defaults(func=cmd_adapt)

    s = sub.add_parser("translate", help="translate stdin or a file into English")
    s.add_argument("--checkpoint", help="mtmeta checkpoint file or release folder (native engine)")
    s.add_argument("--input", help="file (default: stdin)")
    s.add_argument("--output", help="file (default: stdout)")
    s.add_argument("--no-fold", action="store_true", help="keep ULR live instead of folding it into tables (slower; for checks)")
    add_config_arguments(s, C.EvalConfig, skip=("test", "max_sentences"))
    _engine_arguments(s)
    s.set_defaults(func=cmd_translate)

    s = sub.add_parser("evaluate", help="score a checkpoint on a test set, or hypothesis/reference files")
    s.add_argument("--checkpoint")
    s.add_argument("--data", default="work/prepared", help="prepared folder holding the test set")
    s.add_argument("--output-dir", default="work/eval", help="folder for the hypotheses and scores")
    s.add_argument("--hyp", help="hypothesis file to score against --ref")
    s.add_argument("--ref", help="reference file")
    s.add_argument("--output", help="with --hyp/--ref: JSON file to write")
    add_config_arguments(s, C.EvalConfig)
    _engine_arguments(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="write a checkpoint as a CTranslate2 model folder (fast decoding: --engine ctranslate2) "
                                      "or as a release folder (weights only, fp16, checksummed, with a model card)")
    s.add_argument("--checkpoint", required=True, help="checkpoint file (ctranslate2 also reads a release folder)")
    s.add_argument("--format", choices=["ctranslate2", "release"], default="ctranslate2",
                   help="release: a folder that adapt/translate/evaluate/export read as --checkpoint (mtmeta/release.py)")
    s.add_argument("--output", required=True, help="folder to write (refuses a non-empty folder that is not an earlier export)")
    s.add_argument("--quantization", choices=["int8", "int16", "float32", "bfloat16"],
                   help="ctranslate2: weights as stored (default float32); --compute-type can still pick another type at translation time")
    s.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="release: how floating-point weights are stored (default float16, bfloat16 for a tensor fp16 holds worse; read back as float32)")
    s.add_argument("--data", help="release: the prepared folder the model was trained on, for the model card (default: the one the checkpoint names)")
    s.add_argument("--force", action="store_true", help="replace an earlier export in --output")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("recipe", help="run an experiment recipe")
    rs = s.add_subparsers(dest="action", required=True)
    r = rs.add_parser("run", help="prepare, train, adapt and evaluate as the recipe says")
    r.add_argument("file")
    r.add_argument("--dry-run", action="store_true", help="comparison recipes: list the cells and which are done")
    _recipe_arguments(r)
    r.set_defaults(func=cmd_recipe)

    s = sub.add_parser("compare", help="run a comparison grid: strategies x targets x options x sizes x seeds (resumable)")
    s.add_argument("file", help="recipe with `pretrain` and `tiers` (e.g. recipes/compare.yaml)")
    s.add_argument("--dry-run", action="store_true", help="list the cells and which are done; run nothing")
    s.add_argument("--report-only", action="store_true", help="rebuild summary.md and the plots from results.jsonl")
    s.add_argument("--pretrain-only", nargs="+", metavar="NAME", help="only pre-train these `pretrain` entries (in this order), where the grid will reuse them")
    s.add_argument("--check-steps", type=int, metavar="N", help="only check the recipe starts: N steps of each pre-training strategy, one short adaptation, a few translations")
    s.add_argument("--ready-only", action="store_true",
                   help="start no pre-training: run only the cells whose model exists now (scratch, snapshots of runs still going, "
                        "finished runs), e.g. on a free core beside the long runs")
    _recipe_arguments(s)
    s.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    from .safe_io import flush_stdout, os_reason

    args = build_parser().parse_args(argv)
    try:
        if args.func in LONG_COMMANDS:
            if argv is None:  # a process of its own, not a call from Python: the allocator can still be chosen
                from .allocator import reexec_with_jemalloc

                reexec_with_jemalloc()
            load_all_code()
        code = args.func(args)
        flush_stdout()  # checked: output that never reached stdout is an error, not exit 0
        return code
    except MtmetaError as e:
        print(f"mtmeta: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # any other write on a full or read-only disk: one line, not a traceback
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        try:
            flush_stdout()  # a failed stdout is silenced, so exit does not fail on it again
        except MtmetaError:
            pass
        print(f"mtmeta: error: cannot write {e.filename or 'an output'}: {os_reason(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtmeta: interrupted", file=sys.stderr)
        return 130


LONG_COMMANDS = {cmd_prepare, cmd_train, cmd_adapt, cmd_recipe, cmd_compare}
PACKAGES = ("data_prep", "mtmeta", "evaluation")


def load_all_code() -> None:
    """Import every module of the project now. Commands that run for hours
    or days import some modules only when they first need them (a release
    reader, the report); had the checkout been edited or pulled meanwhile,
    that module would come from the new code and could fail against the old
    ones already loaded, killing the run half-way (it happened: a grid died
    on an import when a helper moved between modules)."""
    import importlib
    import pkgutil

    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            importlib.import_module(info.name)


if __name__ == "__main__":
    sys.exit(main())
