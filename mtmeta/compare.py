"""`mtmeta compare FILE`: the comparison grid.

Pre-train each strategy once (same budget), then run every cell a recipe's
tiers name: (strategy, target, adaptation option, adapt-set size, draw,
seed) -> adapt, translate the full test set, score. Each finished cell is
one line of RESULTS/results.jsonl, appended and fsynced, so a killed run
loses at most the cell in flight and a re-run skips every finished cell.
The summary and plots are rebuilt from results.jsonl alone
(evaluation/compare_report.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from data_prep.cleaning import match_key, normalize, protected_keys
from data_prep.corpus import ParallelText
from data_prep.prepare import load_summary, prepare, protected_files, protected_names, read_protected
from .scoring import tokenized_bleu, write_json
from .adaptation import adapt
from .compare_plan import Cell, _rewrite_rows, append_row, expand, load_rows, option_source, plan_size, resolve_best, tier_rows  # noqa: F401
from .config import CompareConfig, TrainConfig
from .errors import ConfigError, DataError
from .safe_io import BusyError, OutputLock, sha256_file, waiting_lock
from .score_testset import evaluate_checkpoint
from .training import train

SCHEMA_VERSION = 1


# --- adapt sets -----------------------------------------------------------------------


def adapt_set(cfg: CompareConfig, data: str, lang: str, size: int, draw: int) -> tuple[ParallelText, dict]:
    """The cell's training text: the adapt set, a seeded random subset of it
    (draw d of size n is the same for every strategy and seed), or the adapt
    set followed by the language's adapt-extra sets (file name order), minus
    any pair whose English is in its test or validation set."""
    full = read_protected(data, lang, "adapt")
    if len(full) < min(size, cfg.full_size):
        raise DataError(f"{lang}: adapt set has {len(full)} pairs, fewer than the {min(size, cfg.full_size)} asked for")
    if size <= len(full):
        if size == len(full) or size == 0:
            idx = list(range(len(full)))
        else:
            idx = sorted(random.Random(f"{lang}:{size}:{draw}").sample(range(len(full)), size))
        text = dataclasses.replace(full, src=[full.src[i] for i in idx], tgt=[full.tgt[i] for i in idx], name=f"{full.name}[{size}#{draw}]")
        return text, {"adapt_set": full.name, "adapt_lines": idx if 0 < size < len(full) else "all"}
    # every test and validation set of the language: the same keys `prepare` decontaminates with
    src_keys, en_keys = protected_keys(
        [read_protected(data, lang, role, name) for role in ("test", "adapt-valid") for name in protected_names(data, lang, role)]
    )
    src, tgt = list(full.src), list(full.tgt)
    names = protected_names(data, lang, "adapt-extra")
    used, dropped = [], 0
    for name in names:
        if len(src) == size:
            break
        extra = read_protected(data, lang, "adapt-extra", name)
        used.append(name)
        for s, t in zip(extra.src, extra.tgt):
            if len(src) == size:
                break
            if match_key(normalize(t)) in en_keys or match_key(normalize(s)) in src_keys:
                dropped += 1
                continue
            src.append(s)
            tgt.append(t)
    if len(src) < size:
        raise DataError(f"{lang}: only {len(src)} adapt + adapt-extra pairs, fewer than the {size} asked for")
    text = dataclasses.replace(full, src=src, tgt=tgt, name=f"{full.name}+extra[{size}]")
    return text, {"adapt_set": f"{full.name} + {' + '.join(used)}", "adapt_lines": "all + first extra", "extra_dropped_overlap": dropped}


# --- running -------------------------------------------------------------------------


RUN_PLACE = ("device", "threads")  # TrainConfig fields that say where a pre-training runs, not what it trains


class Comparison:
    def __init__(self, cfg: CompareConfig, log=print, progress: bool = True):
        cfg.validate()
        self.cfg, self.log, self.progress = cfg, log, progress
        self.work = Path(cfg.workdir)
        self.results = Path(cfg.results)
        self.rows_path = self.results / "results.jsonl"
        self.data = cfg.prepare.output
        self.pretrained: dict[str, dict] = {}
        self.ready_only = False  # set by run()

    # pre-training
    def pretrain_config(self, name: str) -> TrainConfig:
        return dataclasses.replace(self.cfg.pretrain[name], data=self.data, output=str(self.work / "pretrain" / name))

    def ensure_pretrained(self, name: str) -> dict:
        """Train strategy `name` once. Its settings are written before training
        and checked before any reuse or resume, and its checkpoint's hash
        goes into every row, so two different models never share a name."""
        if name in self.pretrained:
            return self.pretrained[name]
        tc = self.pretrain_config(name)
        out = Path(tc.output)
        done, started = out / "done.json", out / "settings.json"
        settings = json.loads(json.dumps(dataclasses.asdict(tc)))  # JSON-normalised
        for path in (done, started):
            if path.is_file():
                old = json.loads(path.read_text(encoding="utf-8")).get("settings", settings)
                # Where it runs (device, threads) is not what it is: a run may move to another
                # machine or thread count between resumes (floating-point order changes, as on
                # any other machine; each segment's hardware is in its train_log.jsonl).
                changed = sorted(k for k in settings if k not in RUN_PLACE and old.get(k) != settings[k])
                if changed:
                    raise ConfigError(
                        f"pre-training {name!r} in {out} was started with other settings ({', '.join(changed)}); "
                        "its cells would mix two models. Restore the recipe, or move that folder and its result rows away"
                    )
        info = _read_done(done)
        if info is None:
            # Held from here to done.json (the engine's own lock nests in it): another grid
            # process gets BusyError, not a second start or a resume of a finished run.
            with OutputLock(out, "pre-training"):
                info = self._pretrain_locked(name, tc, settings)
        if "checkpoint_sha256" not in info or "source_valid_nll" not in info:  # done.json of earlier runs
            info["checkpoint_sha256"] = sha256_file(Path(info["checkpoint"]))
            info["source_valid_nll"] = _best_valid_nll(out / "train_log.jsonl")
            write_json({**info, "settings": settings}, done)
        self.pretrained[name] = info
        return info

    def _pretrain_locked(self, name: str, tc: TrainConfig, settings: dict) -> dict:
        out = Path(tc.output)
        done, started = out / "done.json", out / "settings.json"
        info = _read_done(done)
        if info is not None:  # finished while this process waited for the folder
            return info
        write_json({"settings": settings}, started)
        self.log(f"\n== pre-training {name} ({tc.strategy}{'/' + tc.meta.variant if tc.strategy == 'metanmt' else ''}, {tc.model.embedding})")
        t0 = time.time()
        result = train(tc, log=self.log, progress=self.progress)
        info = {
            "name": name,
            "strategy": tc.strategy,
            "variant": tc.meta.variant if tc.strategy == "metanmt" else "",
            "embedding": tc.model.embedding,
            "checkpoint": result["best"],
            "steps": result["step"],
            "tokens": result["tokens"],
            "train_minutes": round(result["minutes"], 2),
            "wall_minutes": round((time.time() - t0) / 60, 2),
            "budget": {"max_train_tokens": tc.max_train_tokens, "max_minutes": tc.max_minutes, "max_steps": tc.max_steps},
        }
        write_json({**info, "settings": settings}, done)
        return info

    def prepare_data(self) -> None:
        """The prepared folder every strategy and cell reads (reused when unchanged)."""
        self.log("== prepare")
        with waiting_lock(self.work / ".prepare.lock"):  # a second process waits, then reuses it
            prepare(dataclasses.replace(self.cfg.prepare), log=self.log)

    def pretrain_only(self, names: list[str]) -> dict[str, dict]:
        """Prepare the data and pre-train `names`, no cells."""
        self.prepare_data()
        return {name: self.ensure_pretrained(name) for name in names}

    def snapshot(self, name: str, tokens: int) -> dict | None:
        """Run `name`'s weights-only snapshot for `tokens`: the one saved at the
        update that passed that many target tokens (the state a run with that
        token budget ends in). None when the run never got there."""
        path = self.snapshot_file(name, tokens)
        if path is None:
            return None
        return {"tokens": int(path.stem.split("-")[1]), "path": str(path), "sha256": sha256_file(path)}

    def snapshot_file(self, name: str, tokens: int) -> Path | None:
        """The snapshot file `snapshot` describes, without hashing it (cheap: the
        grid asks this of every cell on every pass)."""
        tc = self.pretrain_config(name)
        for path in sorted((Path(tc.output) / "snapshots").glob("tokens-*.pt")):
            if tokens <= int(path.stem.split("-")[1]) < tokens + tc.snapshot_tokens:
                return path
        return None

    def snapshot_missing(self, cell: Cell) -> bool:
        """A snapshot cell of a run that has finished (or early-stopped) short of its tokens."""
        if not cell.pretrain_tokens:
            return False
        if not self.finished(cell.strategy):
            return False
        info = _read_done(Path(self.pretrain_config(cell.strategy).output) / "done.json")
        return info.get("tokens", 0) < cell.pretrain_tokens

    def finished(self, name: str) -> bool:
        return (Path(self.pretrain_config(name).output) / "done.json").is_file()

    def ready(self, cell: Cell) -> bool:
        """Whether a cell's starting model exists now: scratch needs none, a
        snapshot cell its snapshot (the run may still be going), any other
        cell its finished pre-training. Its option must be decided too."""
        if cell.tune == "best":
            return False
        if cell.strategy == "scratch":
            return True
        if cell.pretrain_tokens:
            return self.snapshot_file(cell.strategy, cell.pretrain_tokens) is not None
        return self.finished(cell.strategy)

    def pretrained_for(self, cell: Cell) -> dict | None:
        """The finished pre-training a cell starts from (trained first if need
        be); None for scratch, and, with `ready_only`, for a snapshot cell
        whose run still goes: it needs only its snapshot, and its row names
        no final model (check_pretrained passes it; the snapshot's hash is in it)."""
        if cell.strategy == "scratch":
            return None
        if self.ready_only and cell.pretrain_tokens and not self.finished(cell.strategy):
            return None
        return self.ensure_pretrained(cell.strategy)

    def cell_settings(self) -> str:
        """Hash of everything besides the cell's own key that decides its
        result: adaptation, evaluation, scratch model, prepared data."""
        cfg = self.cfg
        summary = load_summary(self.data)
        blob = json.dumps(
            [dataclasses.asdict(cfg.adapt), dataclasses.asdict(cfg.evaluate), dataclasses.asdict(cfg.scratch_model), cfg.full_size, summary["fingerprint"]],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def check_rows(self, rows: list[dict], cell_hash: str) -> None:
        """Refuse to mix results made with other settings or another model
        under the same name (rows from before these were recorded pass)."""
        other = [r["id"] for r in rows if r.get("cell_settings", cell_hash) != cell_hash]
        if other:
            raise ConfigError(
                f"{len(other)} finished row(s) in {self.rows_path} were made with other adapt/evaluate/prepare settings "
                f"(e.g. {other[0]}); restore the recipe, or use another `results` folder"
            )

    def check_pretrained(self, rows: list[dict], info: dict) -> None:
        mixed = [
            r["id"] for r in rows
            if r["strategy"] == info["name"] and (r.get("pretrain") or {}).get("checkpoint_sha256", info["checkpoint_sha256"]) != info["checkpoint_sha256"]
        ]
        if mixed:
            raise ConfigError(
                f"{len(mixed)} finished row(s) of {info['name']!r} (e.g. {mixed[0]}) come from another pre-trained model than "
                f"{info['checkpoint']}; move those rows or that model away"
            )

    # one cell
    def run_cell(self, cell: Cell, tiers: list[str]) -> dict:
        cfg = self.cfg
        pre = self.pretrained_for(cell)
        t0 = time.time()  # the cell's own time: pre-training is reported with the strategy
        text, set_info = adapt_set(cfg, self.data, cell.lang, cell.size, cell.draw)
        out = self.cell_folder(cell)
        snapshot = self.snapshot(cell.strategy, cell.pretrain_tokens) if cell.pretrain_tokens else None
        if cell.pretrain_tokens and snapshot is None:
            raise DataError(f"cell {cell.id}: {cell.strategy} kept no snapshot at {cell.pretrain_tokens} target tokens "
                            f"(in {self.work / 'pretrain' / cell.strategy / 'snapshots'})")
        start = snapshot["path"] if snapshot else pre["checkpoint"] if pre else ""
        adapted, result = adapt_and_translate(
            cfg, cell.lang, start, text, out,
            tune=cell.tune, seed=cell.seed, zero_shot=cell.size == 0,
        )
        ev = cfg.evaluate
        hyps_dir = self.results / "hyps"
        hyps_dir.mkdir(parents=True, exist_ok=True)
        hyp = hyps_dir / f"{cell.id}.hyp"
        shutil.copyfile(result["hypotheses"], hyp)
        refs = read_protected(self.data, cell.lang, "test", ev.test or None)
        ref_path = protected_files(self.data, cell.lang, "test", ev.test or None)[1]
        hyps = hyp.read_text(encoding="utf-8").split("\n")[:-1]
        n = len(hyps)
        tok = tokenized_bleu(hyps, refs.tgt[:n])
        (out / "last.pt").unlink(missing_ok=True)  # optimizer state: only needed to resume this cell
        return {
            "schema": SCHEMA_VERSION,
            "id": cell.id,
            "tiers": tiers,
            **dataclasses.asdict(cell),
            "pretrain": pre,
            **({"pretrain_snapshot": snapshot} if snapshot else {}),
            "adapt_sentences": len(text),
            **set_info,
            "adapt_steps": adapted["step"],
            "adapt_best_step": adapted.get("best_step"),  # best == last: the step budget may have been too small
            "adapt_stopped_early": adapted.get("stopped_early"),
            "adapt_tokens": adapted["tokens"],
            "valid_metric": cfg.adapt.select_metric,
            "valid_score": adapted["best_score"] if cell.size else None,
            # the best checkpoint's greedy adapt-valid BLEU (the budget plot's y; selection is on valid_metric)
            "valid_bleu": adapted.get("best_validation", {}).get("bleu") if cell.size else None,
            "test": result["test"],
            "sentences": result["sentences"],
            "bleu": result["bleu"],
            "chrf": result["chrf"],
            "tok_bleu": tok["tok_bleu"],
            "bleu_signature": result["bleu_signature"],
            "chrf_signature": result["chrf_signature"],
            "tok_bleu_signature": tok["tok_bleu_signature"],
            "beam": ev.beam,
            "hypotheses": hyp.relative_to(self.results).as_posix(),
            "reference": f"{cell.lang}-en/{ref_path.name}",
            "checkpoint": adapted["best"],
            "adapt_seconds": round(result["adapt_seconds"], 1),
            "translate_seconds": result["translate_seconds"],
            "wall_seconds": round(time.time() - t0, 1),
        }

    def plan(self, rows: list[dict]) -> tuple[list[Cell], dict[str, list[str]]]:
        """Unique cells in run order with the tiers each serves; a 'best'
        option is resolved when the rows allow, else left as 'best'."""
        order: list[Cell] = []
        tiers_of: dict[str, list[str]] = {}
        for cell, tier in expand(self.cfg):
            if cell.tune == "best":
                tune = resolve_best(self.cfg, rows, cell.strategy)
                cell = dataclasses.replace(cell, tune=tune) if tune else cell
            if self.snapshot_missing(cell):
                continue  # early-stopped before these tokens: the report says where each run stopped
            if cell.id not in tiers_of:
                order.append(cell)
                tiers_of[cell.id] = []
            if tier not in tiers_of[cell.id]:
                tiers_of[cell.id].append(tier)
        return order, tiers_of

    def rows_lock(self):
        """Held while reading the rows to pick a cell and while appending
        or rewriting them: several grid processes may share one recipe."""
        return waiting_lock(self.results / ".results.lock")

    def cell_folder(self, cell: Cell) -> Path:
        return self.work / "cells" / cell.id

    def busy_elsewhere(self, cell: Cell) -> bool:
        """Whether another process runs this cell, or the pre-training it
        would have to wait for."""
        if OutputLock.busy(self.cell_folder(cell)):
            return True
        needs = cell.strategy != "scratch" and not self.finished(cell.strategy) and not (
            self.ready_only and cell.pretrain_tokens)
        return needs and OutputLock.busy(self.pretrain_config(cell.strategy).output)

    def claim(self, todo: list[Cell]) -> tuple[Cell | None, OutputLock | None, int]:
        """The first cell of `todo` no other process is on, locked for this
        one (a 'best' cell waits for its options), and how many were busy."""
        busy = 0
        for cell in todo:
            if cell.tune == "best":
                if option_source(self.cfg, cell.strategy) is None:
                    raise ConfigError(
                        f"cell {cell.id} asks for the best adaptation option, but no tier runs "
                        f"{cell.strategy} (or its best_tune_from entry) with several options"
                    )
                continue  # until its option cells have finished (here or in another process)
            if self.busy_elsewhere(cell):
                busy += 1
                continue
            lock = OutputLock(self.cell_folder(cell), "cell")
            try:
                lock.acquire()
            except BusyError:  # taken since the probe
                busy += 1
                continue
            return cell, lock, busy
        return None, None, busy

    def run(self, dry_run: bool = False, ready_only: bool = False) -> list[dict]:
        """Run every unfinished cell, pre-training what they start from first;
        `ready_only`: start no pre-training, run only the cells whose starting
        model exists now (scratch, snapshots of runs still going, finished
        runs), so the grid advances on a free core while the long runs go.

        Several processes may run one recipe at once (e.g. one per core, each
        with --threads 1): each takes the first cell no other is on, under a
        lock on the rows file and one on the cell's folder, so every cell
        runs once; a process stops when what is left runs elsewhere."""
        cfg = self.cfg
        self.ready_only = ready_only
        with self.rows_lock():
            rows = load_rows(self.rows_path)
        order, tiers_of = self.plan(rows)
        done = {r["id"] for r in rows}
        ready = sum(c.id not in done and self.ready(c) for c in order)
        self.log(f"{cfg.name}: {len(order)} cells planned, {sum(c.id in done for c in order)} finished in {self.rows_path}, "
                 f"{ready} of the rest ready to run without pre-training")
        if dry_run:
            for cell in order:
                state = (
                    "done" if cell.id in done else "todo (option picked after the option runs)" if cell.tune == "best"
                    else "running (another process)" if OutputLock.busy(self.cell_folder(cell))
                    else "ready" if self.ready(cell) else "todo"
                )
                self.log(f"  {state}  {cell.id}  [{', '.join(tiers_of[cell.id])}]")
            return rows
        self.prepare_data()
        cell_hash = self.cell_settings()
        bar = tqdm(total=len(order), desc=cfg.name, unit="cell", disable=not (self.progress and sys.stderr.isatty()))
        t_start, ran = time.time(), 0
        while True:
            with self.rows_lock():
                rows = load_rows(self.rows_path)  # with the rows other processes added
                if self.rows_path.is_file():
                    raw = self.rows_path.read_text(encoding="utf-8")
                    if raw and (not raw.endswith("\n") or raw.count("\n") != len(rows)):
                        self.log(f"{self.rows_path}: dropping a torn last line (a run was killed while writing it)")
                        _rewrite_rows(self.rows_path, rows)  # appending after it would corrupt the next row
                self.check_rows(rows, cell_hash)
                done = {r["id"] for r in rows}
                order, tiers_of = self.plan(rows)  # options decided by finished cells resolve here
                for cell in order:  # a cell shared by tiers: record every tier it serves
                    row = next((r for r in rows if r["id"] == cell.id), None)
                    if row is not None and any(t not in row["tiers"] for t in tiers_of[cell.id]):
                        row["tiers"] += [t for t in tiers_of[cell.id] if t not in row["tiers"]]
                        _rewrite_rows(self.rows_path, rows)
                todo = [c for c in order if c.id not in done and (not ready_only or self.ready(c))]
                cell, lock, busy = self.claim(todo)
            bar.total = len(order)
            bar.n = len(order) - len(todo)
            bar.refresh()
            if cell is None:
                if busy:
                    self.log(f"{busy} cell(s) left run in other processes, or wait for a pre-training another process runs: "
                             "stopping here (the last process to finish writes the full report)")
                elif todo:
                    raise ConfigError(
                        f"cell {todo[0].id} asks for the best adaptation option, but the option runs of "
                        f"{todo[0].strategy} (or its best_tune_from entry) at size {cfg.full_size} do not decide one"
                    )
                break
            try:
                try:
                    info = self.pretrained_for(cell)
                except BusyError:  # another process started that pre-training since the probe
                    continue
                if info:
                    self.check_pretrained(rows, info)
                row = {**self.run_cell(cell, tiers_of[cell.id]), "cell_settings": cell_hash}
                with self.rows_lock():
                    # Another process may have written rows (or re-prepared the data) meanwhile.
                    self.check_rows(load_rows(self.rows_path), cell_hash)
                    if self.cell_settings() != cell_hash:
                        raise DataError(f"the prepared data in {self.data} changed while cell {cell.id} ran; its row is not written")
                    append_row(self.rows_path, row)
            finally:
                lock.release()
            ran += 1
            left = len(todo) - 1
            eta = (time.time() - t_start) / ran * left / 60
            finished = sum(c.id in done for c in order) + 1
            self.log(
                f"[{finished}/{len(order)} done] {cell.id}: BLEU {row['bleu']:.2f} chrF {row['chrf']:.2f} "
                f"({row['wall_seconds']:.0f} s; ~{eta:.0f} min left for {left} {'ready ' if ready_only else ''}cells)"
            )
        bar.close()
        return rows


def check_recipe(cfg: CompareConfig, steps: int, log=print) -> dict:
    """Start everything a recipe would run, briefly: `steps` pre-training
    steps of each strategy, `steps` adaptation steps of one cell, and the
    translation of a few test sentences. For checking a large recipe
    (e.g. recipes/paper.yaml) on the machine before spending hours on it."""
    if steps < 1:
        raise ConfigError("--check-steps must be >= 1")
    cfg.validate()
    work = Path(cfg.workdir) / "check"
    with waiting_lock(Path(cfg.workdir) / ".prepare.lock"):  # as Comparison.prepare_data
        prepare(dataclasses.replace(cfg.prepare), log=log)
    report = {"steps": steps, "pretrain": {}}
    first = None
    for name in cfg.pretrain:
        tc = dataclasses.replace(
            cfg.pretrain[name], data=cfg.prepare.output, output=str(work / name), max_steps=steps,
            max_train_tokens=0, max_minutes=0.0, validate_every=0, save_every=0, bleu_sentences=0, select_metric="loss", log_every=1,
        )
        shutil.rmtree(tc.output, ignore_errors=True)
        t0 = time.time()
        result = train(tc, log=log, progress=False, resume=False)
        report["pretrain"][name] = {
            "steps": result["step"], "tokens": result["tokens"], "train_seconds": round(result["minutes"] * 60, 1),
            "tokens_per_second": round(result["tokens"] / max(1e-9, result["minutes"] * 60)),
            "wall_seconds": round(time.time() - t0, 1),
        }
        log(f"check {name}: {result['step']} steps, {report['pretrain'][name]['tokens_per_second']} target tok/s")
        first = first or result["best"]
    lang = cfg.targets[0]
    text, _ = adapt_set(cfg, cfg.prepare.output, lang, cfg.full_size, 0)
    out = work / f"adapt-{lang}"
    shutil.rmtree(out, ignore_errors=True)
    adapted, result = adapt_and_translate(
        cfg, lang, first or "", text, out, tune="all", resume=False, max_sentences=8, log=log,
        max_steps=steps, max_minutes=0.0, validate_every=0, bleu_sentences=0, select_metric="loss",
    )
    ev = cfg.evaluate
    report["adapt"] = {"lang": lang, "steps": adapted["step"], "tokens": adapted["tokens"]}
    report["translate"] = {"sentences": result["sentences"], "beam": ev.beam, "seconds": result["translate_seconds"]}
    (work / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    log(f"check passed: every pre-training strategy ran {steps} steps, adaptation and translation ran; {work / 'report.json'}")
    return report


def adapt_and_translate(
    cfg: CompareConfig, lang: str, checkpoint: str, text: ParallelText, output: Path, *, tune: str,
    seed: int = 1, zero_shot: bool = False, resume: bool = True, max_sentences: int | None = None,
    log=None, **adapt_overrides,
) -> tuple[dict, dict]:
    """Adapt `checkpoint` (or the recipe's scratch model when empty) to `lang`
    on `text`, select on the language's adapt-valid set, and translate its
    test set with the recipe's evaluate settings. Every cell, and
    --check-steps, goes through here. Returns (adapt result, translation
    result with 'adapt_seconds' added)."""
    t0 = time.time()
    valid = read_protected(cfg.prepare.output, lang, "adapt-valid")
    ad = dataclasses.replace(
        cfg.adapt, lang=lang, data=cfg.prepare.output, checkpoint=checkpoint, output=str(output),
        tune=tune, seed=seed, zero_shot=zero_shot, model=cfg.scratch_model, **adapt_overrides,
    )
    adapted = adapt(ad, log=log or (lambda *_: None), progress=False, resume=resume, texts=(text, valid))
    t_adapt = time.time() - t0
    ev = cfg.evaluate
    result = evaluate_checkpoint(
        adapted["best"], lang, cfg.prepare.output, output / "eval", test=ev.test or None, beam=ev.beam,
        batch_sentences=ev.batch_sentences, max_sentences=ev.max_sentences if max_sentences is None else max_sentences,
        progress=False,
    )
    return adapted, {**result, "adapt_seconds": t_adapt}


def _best_valid_nll(log: Path) -> float | None:
    """Lowest source-language validation NLL in an engine's train_log.jsonl."""
    from .safe_io import read_jsonl

    values = []
    # A torn line (a kill or a full disk mid-append, appended onto by older code) is skipped:
    # the log only informs this record, and it must not fail every re-run.
    for record in read_jsonl(log, skip_bad=True):
        if isinstance(record, dict) and isinstance(record.get("validation"), dict) and "valid_nll" in record["validation"]:
            values.append(record["validation"]["valid_nll"])
    return round(min(values), 4) if values else None


def _read_done(path: Path) -> dict | None:
    """A finished pre-training's record (done.json, its settings left out); None while it runs."""
    if not path.is_file():
        return None
    info = json.loads(path.read_text(encoding="utf-8"))
    info.pop("settings", None)
    return info


def run_compare(cfg: CompareConfig, log=print, progress: bool = True, dry_run: bool = False, ready_only: bool = False) -> list[dict]:
    """Run (or, dry, list) every cell; the finished rows. The report is
    written from the rows by the layer above (evaluation/compare_report.py;
    `mtmeta compare` does both)."""
    return Comparison(cfg, log=log, progress=progress).run(dry_run=dry_run, ready_only=ready_only)


__all__ = ["Cell", "Comparison", "check_recipe", "tier_rows", "plan_size", "expand", "resolve_best", "load_rows", "adapt_set", "run_compare"]
