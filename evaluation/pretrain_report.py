"""Pre-training reports (issue 11): validation curves of every run, and a
per-source-language table for one checkpoint.

    python -m evaluation.pretrain_report curves recipes/compare.yaml
    python -m evaluation.pretrain_report progress work/compare/pretrain/multitask/train_log.jsonl --after 25000
    python -m evaluation.pretrain_report per-language --checkpoint work/compare/pretrain/multitask/best.pt --run multitask

`curves` reads each `pretrain` entry's train_log.jsonl (WORKDIR/pretrain/NAME/,
else the committed copy RESULTS_DIR/NAME_train_log.jsonl; `--log NAME=PATH`
names another) and writes ONE figure, results/pretrain/curves.png: source
validation NLL, BLEU and chrF against target tokens (up to the budget, which
is marked) and against updates, every strategy in the same panels, the best
validation (what best.pt holds) starred, session resumes as faint dotted lines.
A missing or empty log is skipped with a note. Records a log should not hold
(a torn or garbled line; records of steps a resume wrote again, in a log from
before the engine repaired its log on resume) are dropped and counted.

`per-language` decodes every source language's held-out validation pairs (the
100 per language that training validates on) with the checkpoint, greedy and
with beam search, and writes RESULTS_DIR/per_language_RUN.{md,json}: sacreBLEU
BLEU and chrF (signatures in the files), the source-language NLL of the pairs
(computed per pair, batched as training validates; pooled it equals training's
valid_nll), the share of output lines with one word repeated 4+ times in a row
(mtmeta.scoring.repetition), the command and the checkpoint's identity (update,
target tokens, SHA-256). References are the pairs' English text as prepare
cleaned it (the pack line, NFKC and whitespace normalised), found in the pack
by the stored token ids; without the pack, the stored ids decoded (said in the
files). A second table pools the pairs by the pack file they come from and by
whether their English reference is also a training target (of another source
language: multi-way parallel sets). `--hyp-dir` keeps the hypotheses;
`--reuse-hyps` scores them again without decoding.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtmeta.errors import ConfigError, DataError, MtmetaError

RESULTS_DIR = Path("results/pretrain")
COLORS = {"multitask": "C0", "metanmt": "C1", "transfer": "C2"}
# (label, keys in the order they are looked for: the default validator's, then MetaNMT's meta-validation)
METRICS = (
    ("source valid NLL (nats/token)", ("valid_nll", "meta_valid_nll")),
    ("BLEU (greedy)", ("bleu", "meta_bleu")),
    ("chrF (greedy)", ("chrf", "meta_chrf")),
)


# --- the training logs -----------------------------------------------------------------


@dataclass
class RunLog:
    """One run's train_log.jsonl as one uninterrupted run."""

    name: str
    path: Path
    train: list[dict] = field(default_factory=list)  # {"step", "tokens", "loss", "tok_s", "lr"}; "loss" is the window mean where "loss_steps" is set, one batch's before
    validations: list[dict] = field(default_factory=list)  # the validation record, plus "improved"
    segments: list[dict] = field(default_factory=list)  # {"step", "tokens", "resumed", "hardware", "time"}
    notes: list[str] = field(default_factory=list)

    def best(self) -> dict | None:
        """The validation best.pt holds: the highest selection score (the
        engine's rule; -NLL without one), the first of equals."""
        scored = [v for v in self.validations if _value(v, METRICS[0][1]) is not None or "score" in v]
        if not scored:
            return None
        return max(scored, key=lambda v: v["score"] if "score" in v else -_value(v, METRICS[0][1]))

    def last(self) -> dict:
        rows = [r for r in self.train + self.validations + self.segments if isinstance(r.get("tokens"), (int, float))]
        return max(rows, key=lambda r: (r["step"], r["tokens"]), default={"step": 0, "tokens": 0})


def _value(record: dict, keys: tuple[str, ...]):
    for k in keys:
        v = record.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return v
    return None


def _step_tokens(r: dict) -> bool:
    return isinstance(r.get("step"), int) and isinstance(r.get("tokens"), (int, float))


def read_run_log(path: str | Path, name: str = "") -> RunLog:
    """Read a train_log.jsonl whatever happened to it. A line that is not a
    JSON object (torn by a kill, garbled) and a record of no known kind are
    skipped with a note. A resume (a segment record with `resumed` at step S)
    supersedes the records of steps after S written before it (and of
    segments from S on): the engine drops those itself since it repairs its
    log, older logs still hold them."""
    path = Path(path)
    log = RunLog(name or path.parent.name, path)
    if not path.is_file():
        log.notes.append(f"{path}: no log")
        return log
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    bad, unknown, superseded = [], 0, 0
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        if not isinstance(record, dict):
            bad.append(i)
            continue
        if isinstance(record.get("segment"), dict) and _step_tokens(record["segment"]):
            seg = record["segment"]
            if seg.get("resumed"):
                s = seg["step"]
                before = len(log.train) + len(log.validations) + len(log.segments)
                log.train = [r for r in log.train if r["step"] <= s]
                log.validations = [r for r in log.validations if r["step"] <= s]
                log.segments = [r for r in log.segments if r["step"] < s]
                superseded += before - len(log.train) - len(log.validations) - len(log.segments)
            log.segments.append(dict(seg))
        elif isinstance(record.get("validation"), dict) and _step_tokens(record["validation"]):
            v = {**record["validation"], "improved": record.get("improved")}
            log.validations = [r for r in log.validations if r["step"] != v["step"]]  # one per step: the later
            log.validations.append(v)
        elif _step_tokens(record) and "loss" in record:
            log.train.append(record)
        else:
            unknown += 1
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f", ... ({len(bad)} lines)" if len(bad) > 5 else "")
        log.notes.append(f"{path}: skipped {len(bad)} line(s) that are not JSON records (torn or garbled): line {shown}")
    if unknown:
        log.notes.append(f"{path}: skipped {unknown} record(s) of no known kind")
    if superseded:
        log.notes.append(f"{path}: dropped {superseded} record(s) that a later resume wrote again")
    log.validations.sort(key=lambda r: r["step"])
    if not (log.train or log.validations):
        log.notes.append(f"{path}: no training or validation records")
    return log


def find_logs(recipe: str | None, logs: list[str] | None, results_dir: Path) -> tuple[dict[str, Path], dict[str, int], list[str]]:
    """name -> log path, name -> token budget, notes. From the recipe's
    `pretrain` entries (its work folder, else the committed copy), then
    `--log NAME=PATH` (added or replacing)."""
    paths: dict[str, Path] = {}
    budgets: dict[str, int] = {}
    notes: list[str] = []
    if recipe:
        from mtmeta.config import load_compare_yaml

        cfg = load_compare_yaml(recipe)
        for name, tc in cfg.pretrain.items():
            budgets[name] = tc.max_train_tokens
            live = Path(cfg.workdir) / "pretrain" / name / "train_log.jsonl"
            copy = results_dir / f"{name}_train_log.jsonl"
            paths[name] = copy if (copy.is_file() and not live.is_file()) else live
            if paths[name] == copy:
                notes.append(f"{name}: {live} not here; using the committed copy {copy}")
    for spec in logs or []:
        if "=" not in spec:
            raise ConfigError(f"--log {spec!r}: expected NAME=PATH")
        name, path = spec.split("=", 1)
        paths[name.strip()] = Path(path.strip())
    if not paths:
        raise ConfigError("no runs: give a compare recipe and/or --log NAME=PATH")
    return paths, budgets, notes


def plot_curves(runs: list[RunLog], budgets: dict[str, int], path: str | Path, title: str = "") -> None:
    """One figure: rows NLL / BLEU / chrF; columns target tokens, updates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(METRICS), 2, figsize=(12, 10), sharex="col", squeeze=False)
    budget_values = sorted({b for r in runs if (b := budgets.get(r.name))})
    max_tokens = max([r.last()["tokens"] for r in runs] + budget_values + [1])
    max_steps = max([r.last()["step"] for r in runs] + [1])
    for k, run in enumerate(runs):
        color = COLORS.get(run.name, f"C{3 + k}")
        best = run.best()
        last = run.last()
        budget = budgets.get(run.name)
        label = f"{run.name}: {last['step']:,} updates, {last['tokens'] / 1e6:.1f}M tokens" + (
            f" ({100 * last['tokens'] / budget:.0f}% of budget)" if budget else ""
        )
        if best is not None:
            label += f"; best NLL {_value(best, METRICS[0][1]):.3f} at {best['step']:,}"
        for i, (_, keys) in enumerate(METRICS):
            pts = [(v["tokens"], v["step"], _value(v, keys)) for v in run.validations]
            pts = [p for p in pts if p[2] is not None]
            for j, xi in enumerate((0, 1)):
                ax = axes[i][j]
                xs = [p[xi] / (1e6 if xi == 0 else 1) for p in pts]
                ax.plot(xs, [p[2] for p in pts], marker="o", ms=3.5, color=color, label=label if (i, j) == (0, 0) else None)
                if best is not None and _value(best, keys) is not None:
                    bx = (best["tokens"] / 1e6) if xi == 0 else best["step"]
                    ax.plot([bx], [_value(best, keys)], marker="*", ms=15, color=color, mec="black", mew=0.8, zorder=5,
                            label="best validation (best.pt)" if (i, j) == (0, 1) and k == 0 else None)
                for seg in run.segments:
                    if seg.get("resumed"):
                        sx = (seg["tokens"] / 1e6) if xi == 0 else seg["step"]
                        ax.axvline(sx, color=color, ls=":", lw=0.9, alpha=0.45,
                                   label="session resume" if (i, j) == (1, 1) and k == 0 and seg is next(s for s in run.segments if s.get("resumed")) else None)
    for i, (ylabel, _) in enumerate(METRICS):
        for j in range(2):
            ax = axes[i][j]
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(ylabel)
                for b in budget_values:
                    ax.axvline(b / 1e6, color="black", ls="--", lw=1.0, label=f"budget {b / 1e6:g}M tokens" if i == 0 else None)
                ax.set_xlim(0, max_tokens / 1e6 * 1.03)
            else:
                ax.set_xlim(0, max_steps * 1.03)
    axes[-1][0].set_xlabel("target tokens of forward/backward work (millions)")
    axes[-1][1].set_xlabel("updates (optimizer steps; a MetaNMT step spends two batches)")
    # NLL: the untrained model's first validation (~ln of the vocabulary) would squash the rest of the curve
    later = [v for r in runs for v in r.validations[1:] if _value(v, METRICS[0][1]) is not None]
    first = [_value(r.validations[0], METRICS[0][1]) for r in runs if r.validations]
    if len(later) >= 2 and first and max(first, key=lambda x: x or 0) is not None:
        top = max(_value(v, METRICS[0][1]) for v in later)
        low = min(_value(v, METRICS[0][1]) for v in later)
        if max(x for x in first if x is not None) > top + (top - low):
            for ax in axes[0]:
                ax.set_ylim(low - 0.08 * (top - low), top + 0.12 * (top - low))
            # one run per line: a single line outgrows the axes once there are several runs
            off = "\n".join(f"{r.name} {_value(r.validations[0], METRICS[0][1]):.2f} at update {r.validations[0]['step']:,}" for r in runs
                             if r.validations and _value(r.validations[0], METRICS[0][1]) is not None)
            axes[0][1].annotate(f"first validation, off scale:\n{off}", xy=(0.99, 0.97),
                                xycoords="axes fraction", ha="right", va="top", fontsize=8, color="0.35")
    axes[0][0].set_title("against target tokens (the shared budget)")
    axes[0][1].set_title("against updates")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8.5, frameon=False)
    fig.suptitle(title or "Pre-training: source-language validation")
    fig.tight_layout(rect=(0, 0.035 + 0.022 * ((len(labels) + 1) // 2), 1, 0.97))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(Path(path).stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def run_summary(run: RunLog, budget: int | None) -> dict:
    best = run.best()
    last = run.last()
    pick = lambda v: None if v is None else {  # noqa: E731
        "step": v["step"], "tokens": v["tokens"], **{keys[0]: _value(v, keys) for _, keys in METRICS}
    }
    return {
        "log": str(run.path),
        "budget_tokens": budget,
        "last_step": last["step"],
        "last_tokens": last["tokens"],
        "validations": len(run.validations),
        "best": pick(best),
        "latest_validation": pick(run.validations[-1]) if run.validations else None,
        "resumes": [{k: s.get(k) for k in ("step", "tokens", "hardware", "time")} for s in run.segments if s.get("resumed")],
        "notes": run.notes,
    }


def write_curves(recipe: str | None, logs: list[str] | None = None, output: str | Path = RESULTS_DIR / "curves.png",
                 results_dir: Path = RESULTS_DIR, log=print, only: list[str] | None = None) -> dict:
    paths, budgets, notes = find_logs(recipe, logs, results_dir)
    if only:
        unknown = sorted(set(only) - set(paths))
        if unknown:
            raise ConfigError(f"--runs {unknown}: no such run ({', '.join(paths)})")
        paths = {n: paths[n] for n in only}
    runs, summary = [], {}
    for name, path in paths.items():
        run = read_run_log(path, name)
        if not (run.train or run.validations):
            notes.append(f"{name}: skipped ({'; '.join(run.notes)})")
            continue
        notes += [f"{name}: {n}" for n in run.notes]
        runs.append(run)
        summary[name] = run_summary(run, budgets.get(name))
    for n in notes:
        log(n)
    if not runs:
        raise DataError("no run has a log with records yet: " + "; ".join(notes))
    plot_curves(runs, budgets, output, "Pre-training (recipes/compare.yaml): source-language validation, 1,800 held-out pairs; "
                "BLEU/chrF greedy on 10 per language")
    return {"figure": str(output), "runs": summary, "notes": notes}


# --- per source language -----------------------------------------------------------------


def checkpoint_identity(path: str | Path, state: dict) -> dict:
    from mtmeta.safe_io import sha256_file

    ts = state.get("train_state") or state.get("snapshot") or {}
    rc = state.get("run_config") or {}
    history = state.get("history") or []
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "update": ts.get("step"),
        "target_tokens": ts.get("tokens"),
        "training_minutes": round(ts["elapsed"] / 60, 1) if isinstance(ts.get("elapsed"), (int, float)) else None,
        "strategy": rc.get("strategy"),
        "budget_tokens": rc.get("max_train_tokens"),
        "bleu_sentences": rc.get("bleu_sentences"),
        "last_validation": history[-1] if history else None,
    }


def origin_family(name: str) -> str:
    """A pack file's kind: WMT news test sets by one name, others by their prefix."""
    return "WMT news" if name.startswith("news") else name.split("-")[0]


def load_pack_text(pack: str | Path, langs: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    """lang -> (source, English, pack file name) of every meta-train line, normalised as prepare cleans them."""
    from data_prep.cleaning import normalize
    from data_prep.corpus import TRAIN_ROLES
    from data_prep.sources import load_pack

    out: dict[str, list[tuple[str, str, str]]] = {lang: [] for lang in langs}
    for text in load_pack(pack, langs=langs, roles=sorted(TRAIN_ROLES)):
        out[text.lang] += [(normalize(s), normalize(t), text.name) for s, t in zip(text.src, text.tgt)]
    return out


def held_out_pairs(data: str | Path, lang: str, src_vocab, tgt_vocab, lines: list[tuple[str, str, str]] | None) -> dict:
    """A language's validation pairs as training reads them (token ids), and
    their text: the pack pair whose cleaned text encodes to exactly those ids
    (prepare's normalisation; `lines` from load_pack_text), with the pack file
    it came from; the ids decoded where no pack line matches."""
    from mtmeta.data import PairData

    pairs = PairData.load(Path(data) / "data" / f"{lang}-en" / "valid.npz")
    src_ids = [s.tolist() for s in pairs.src]
    tgt_ids = [t.tolist() for t in pairs.tgt]
    decoded_refs = [tgt_vocab.decode(t) for t in tgt_ids]
    src_text = [src_vocab.decode(s) for s in src_ids]
    refs = list(decoded_refs)
    origins = ["?"] * len(refs)
    matched = 0
    if lines:
        by_text: dict[str, list[int]] = {}
        for j, (_, t, _) in enumerate(lines):
            by_text.setdefault(t, []).append(j)
        by_ids: dict[tuple, list[int]] | None = None
        for i in range(len(tgt_ids)):
            found = None
            for attempt in (0, 1):
                if attempt == 0:
                    cands = by_text.get(decoded_refs[i], [])
                else:
                    if by_ids is None:  # decoding is not always the identity: encode every line once
                        by_ids = {}
                        for j, ids in enumerate(tgt_vocab.encode_batch([t for _, t, _ in lines])):
                            by_ids.setdefault(tuple(ids), []).append(j)
                    cands = by_ids.get(tuple(tgt_ids[i]), [])
                for j in cands:
                    if tgt_vocab.encode(lines[j][1]) == tgt_ids[i] and src_vocab.encode(lines[j][0]) == src_ids[i]:
                        found = j
                        break
                if found is not None:
                    break
            if found is not None:
                src_text[i], refs[i], origins[i] = lines[found]
                matched += 1
    return {"src_ids": src_ids, "src": src_text, "refs": refs, "decoded_refs": decoded_refs, "pairs": pairs,
            "from_pack": matched, "origins": origins}


def _check_vocabularies(bundle, data: str | Path, langs: list[str]) -> None:
    """The prepared folder's ids mean the checkpoint's pieces only if both hold the same vocabularies."""
    from data_prep.prepared import load_prepared_vocabs

    en, src, _ = load_prepared_vocabs(data, langs)
    if en.proto != bundle.tgt_vocab.proto:
        raise DataError(f"{data}: its English vocabulary is not the checkpoint's; score with the prepared folder the model was trained on")
    for lang in langs:
        table = bundle.model.src_embed.lang_table[lang]
        if src[table].proto != bundle.src_vocabs[table].proto:
            raise DataError(f"{data}: the {lang} vocabulary is not the checkpoint's; score with the prepared folder the model was trained on")


def per_language(checkpoint: str | Path, data: str | Path, pack: str | Path | None = None, beams: tuple[int, ...] = (1, 5),
                 langs: list[str] | None = None, batch_sentences: int = 64, threads: int = 0, engine: str = "native",
                 model: str | None = None, hyp_dir: str | Path | None = None, reuse_hyps: bool = False, command: str = "",
                 log=print) -> dict:
    """Score every source language's held-out validation pairs with one checkpoint.
    `reuse_hyps`: take the hypotheses an earlier run wrote into `hyp_dir` for the
    same pairs (and that run's decoding time) instead of decoding again."""
    from data_prep.prepared import load_summary
    from mtmeta.checkpoint import load_bundle
    from mtmeta.decoding import translate_ids
    from mtmeta.hardware import setup
    from mtmeta.scoring import repetition, score
    from mtmeta.data import PairData

    if reuse_hyps and not hyp_dir:
        raise ConfigError("--reuse-hyps reads the hypotheses of --hyp-dir; give it")
    hw = setup("cpu", "fp32", threads)
    t0 = time.time()
    bundle, state = load_bundle(checkpoint)
    identity = checkpoint_identity(checkpoint, state)
    del state
    known = bundle.languages()
    prepared = load_summary(data)
    prepared_langs = prepared["train_langs"]
    summary_counts = prepared.get("counts") or {}
    langs = langs or [lg for lg in prepared_langs if lg in known]
    missing = [lg for lg in langs if lg not in known or lg not in prepared_langs]
    if missing:
        raise ConfigError(f"languages {missing}: not both in the checkpoint ({', '.join(known)}) and in {data} ({', '.join(prepared_langs)})")
    _check_vocabularies(bundle, data, langs)
    log(f"loaded {checkpoint} (update {identity['update']}, {identity['target_tokens']} target tokens) in {time.time() - t0:.0f}s")

    pack_lines = load_pack_text(pack, langs) if pack else {}
    sets = {lang: held_out_pairs(data, lang, bundle.src_vocab(lang), bundle.tgt_vocab, pack_lines.get(lang)) for lang in langs}
    del pack_lines
    # Is a held-out reference also a training target (the same English token ids) of another source
    # language (multi-way parallel sets: NTREX-128, WMT news, Tatoeba), or of its own language with another source?
    trained_by: dict[bytes, set[str]] = {}
    for lg in prepared_langs:
        for y in PairData.load(Path(data) / "data" / f"{lg}-en" / "train.npz").tgt:
            trained_by.setdefault(y.tobytes(), set()).add(lg)
    for lang, s in sets.items():
        s["seen"] = [_seen(trained_by.get(y.tobytes(), set()), lang) for y in s["pairs"].tgt]
    del trained_by

    # Source NLL per pair, as training's validation computes it (model in eval mode, fp32, the unfolded
    # embedding; mtmeta.data batches): per language and pooled, the token-weighted mean.
    t = time.time()
    bundle.model.eval()  # as the engine validates: no dropout, no gradients
    for lang in langs:
        sets[lang]["nll"], sets[lang]["ntok"] = pair_nll(bundle, lang, sets[lang]["pairs"])
    nll_seconds = time.time() - t
    nll = {lang: _mean_nll([sets[lang]]) for lang in langs}
    nll_all = _mean_nll(list(sets.values()))
    log(f"source NLL of {sum(len(s['refs']) for s in sets.values())} pairs: {nll_all:.4f} ({nll_seconds:.0f}s)")

    if engine == "ctranslate2":
        from mtmeta.export import open_export

        if not model:
            raise ConfigError("--engine ctranslate2 needs --model DIR (a folder written by `mtmeta export`)")
        exported = open_export(model, compute_type="float32", device="cpu", threads=threads)
        generate = lambda lang, ids, beam: [bundle.tgt_vocab.decode(y) for y in exported.generate_ids(lang, ids, beam, batch_sentences)]  # noqa: E731
    else:
        bundle.model.fold_embeddings()  # as `mtmeta translate` decodes (equal outputs; faster)
        generate = lambda lang, ids, beam: translate_ids(bundle, lang, ids, beam, batch_sentences, progress=False, hw=hw)  # noqa: E731

    def scored(hyps: list[str], refs: list[str]) -> dict:
        s = score(hyps, refs)
        hyp_len, ref_len = _lengths(s["bleu_detail"])
        return {"bleu": s["bleu"], "chrf": s["chrf"], "sentences": s["sentences"], "len_ratio": _ratio(hyp_len, ref_len), **repetition(hyps)}

    out: dict = {"checkpoint": identity, "languages": langs, "nll": {"per_language": nll, "all": nll_all, "seconds": round(nll_seconds, 1)},
                 "references": {lg: {"from_pack": s["from_pack"], "pairs": len(s["refs"]),
                                     "words_per_line": round(sum(len(r.split()) for r in s["refs"]) / max(1, len(s["refs"])), 1),
                                     "origins": _count([origin_family(o) for o in s["origins"]]),
                                     "reference_is_a_training_target": _count(s["seen"])}
                                for lg, s in sets.items()},
                 "train_pairs": {lg: (summary_counts.get(lg) or {}).get("train") for lg in langs},
                 "decoding": {}}
    for beam in beams:
        folder = Path(hyp_dir) / f"beam{beam}" if hyp_dir else None
        hyps: dict[str, list[str]] = {}
        t = time.time()
        if reuse_hyps:
            timing = json.loads((folder / "decode.json").read_text(encoding="utf-8")) if (folder / "decode.json").is_file() else {}
            if timing.get("checkpoint_sha256") not in (None, identity["sha256"]):
                raise DataError(f"--reuse-hyps: {folder} was decoded with another checkpoint (sha256 {timing['checkpoint_sha256'][:16]}…)")
            for lang in langs:
                src_file, hyp_file = folder / f"{lang}.src", folder / f"{lang}.hyp.en"
                if not (src_file.is_file() and hyp_file.is_file()):
                    raise DataError(f"--reuse-hyps: {hyp_file} or {src_file} missing; decode without --reuse-hyps")
                if src_file.read_text(encoding="utf-8").split("\n")[:-1] != sets[lang]["src"]:
                    raise DataError(f"--reuse-hyps: {src_file} holds other sources than the held-out pairs of {data}")
                hyps[lang] = hyp_file.read_text(encoding="utf-8").split("\n")[:-1]
            seconds = timing.get("seconds")
            log(f"beam {beam}: reused the hypotheses in {folder}")
        else:
            for lang in langs:
                hyps[lang] = generate(lang, sets[lang]["src_ids"], beam)
                log(f"beam {beam}: {lang} done ({time.time() - t:.0f}s)")
            seconds = round(time.time() - t, 1)
            timing = {"seconds": seconds, "checkpoint_sha256": identity["sha256"], "engine": engine, "threads": hw.threads, "command": command}
        rows = {lang: scored(hyps[lang], sets[lang]["refs"]) for lang in langs}
        all_h = [h for lang in langs for h in hyps[lang]]
        all_r = [r for lang in langs for r in sets[lang]["refs"]]
        s_all = score(all_h, all_r)
        rows["all"] = scored(all_h, all_r)
        # Pooled over the languages: by the pack file the pairs come from, and by whether their English is a training target.
        groups: dict[str, dict] = {}
        for lang in langs:
            s = sets[lang]
            for i, (h, r) in enumerate(zip(hyps[lang], s["refs"])):
                origin = origin_family(s["origins"][i])
                trained = "no" if s["seen"][i] == "no" else "yes"
                for key in (f"from {origin}", f"from {origin}, reference trained: {trained}", f"reference trained: {s['seen'][i]}"):
                    g = groups.setdefault(key, {"hyps": [], "refs": [], "nll": 0.0, "ntok": 0})
                    g["hyps"].append(h)
                    g["refs"].append(r)
                    if s["ntok"][i]:
                        g["nll"] += s["nll"][i]
                        g["ntok"] += s["ntok"][i]
        groups = {k: {**scored(g["hyps"], g["refs"]), "nll": g["nll"] / g["ntok"] if g["ntok"] else None}
                  for k, g in sorted(groups.items(), key=lambda kv: (kv[0].startswith("reference"), kv[0]))}
        entry = {"seconds": seconds, "timing": timing, "scores": rows, "groups": groups,
                 "bleu_signature": s_all["bleu_signature"], "chrf_signature": s_all["chrf_signature"],
                 "examples": {lang: [{"src": sets[lang]["src"][i], "hyp": hyps[lang][i], "ref": sets[lang]["refs"][i]} for i in range(min(2, len(hyps[lang])))]
                              for lang in langs}}
        if beam == 1 and set(langs) == set(known) and identity["bleu_sentences"]:
            # What training's validation computes: the first bleu_sentences // languages pairs of each language, refs decoded from ids.
            per = max(1, identity["bleu_sentences"] // len(langs))
            sub = score([h for lang in langs for h in hyps[lang][:per]], [r for lang in langs for r in sets[lang]["decoded_refs"][:per]])
            entry["training_validation_subset"] = {"per_language": per, "bleu": sub["bleu"], "chrf": sub["chrf"]}
        out["decoding"][f"beam{beam}"] = entry
        if folder is not None and not reuse_hyps:
            folder.mkdir(parents=True, exist_ok=True)
            for lang in langs:
                (folder / f"{lang}.hyp.en").write_text("\n".join(hyps[lang]) + "\n", encoding="utf-8")
                (folder / f"{lang}.ref.en").write_text("\n".join(sets[lang]["refs"]) + "\n", encoding="utf-8")
                (folder / f"{lang}.src").write_text("\n".join(sets[lang]["src"]) + "\n", encoding="utf-8")
            (folder / "decode.json").write_text(json.dumps(timing) + "\n", encoding="utf-8")
        log(f"beam {beam}: all {len(all_h)} sentences ({seconds} s): BLEU {rows['all']['bleu']}, chrF {rows['all']['chrf']}")
    out["engine"] = engine
    out["threads"] = hw.threads
    return out


def _seen(langs: set[str], lang: str) -> str:
    if langs - {lang}:
        return "of another language"
    return "of its own language (another source)" if lang in langs else "no"


def pair_nll(bundle, lang: str, pairs, max_tokens: int = 4000) -> tuple[list[float], list[int]]:
    """Summed NLL (nats) and target tokens (EOS included) of each pair, batched
    as training's validation batches them (mtmeta.data.make_batches, which skips
    pairs longer than the model's positions: those get 0 tokens). Call in eval mode."""
    import torch

    from data_prep.vocab import PAD
    from mtmeta.data import collate, make_batches
    from mtmeta.hardware import model_device, to_device

    model = bundle.model
    offset = bundle.src_offset(lang)
    sums, ntok = [0.0] * len(pairs), [0] * len(pairs)
    with torch.no_grad():
        for idx in make_batches(pairs, max_tokens, model.cfg.max_positions):
            batch = to_device(collate(pairs, idx, offset), model_device(model))
            logits, _ = model(**batch["net_input"])
            lprobs = torch.log_softmax(logits.float(), dim=-1)
            target = batch["target"]
            mask = target.ne(PAD)
            nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
            for row, i in enumerate(idx.tolist()):
                sums[i] = float(nll[row].double().sum())
                ntok[i] = int(mask[row].sum())
    return sums, ntok


def _mean_nll(sets: list[dict]) -> float:
    total = sum(x for s in sets for x in s["nll"])
    tokens = sum(n for s in sets for n in s["ntok"])
    return total / tokens if tokens else float("nan")


def _count(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _lengths(detail: str) -> tuple[int, int]:
    """hyp_len and ref_len from sacrebleu's BLEU string."""
    import re

    m = re.search(r"hyp_len = (\d+) ref_len = (\d+)", detail)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


def per_language_markdown(result: dict, run: str, command: str, label: str = "") -> str:
    ck = result["checkpoint"]
    beams = list(result["decoding"])
    tokens = ck.get("target_tokens")
    budget = ck.get("budget_tokens")
    where = f"update {ck['update']:,}, {tokens / 1e6:.1f}M target tokens" if isinstance(tokens, int) and isinstance(ck.get("update"), int) else "update ?"
    if budget:
        where += f" of the {budget / 1e6:g}M budget ({100 * tokens / budget:.0f}%)"
    lines = [f"# Per source language: {run}" + (f" — {label}" if label else ""), ""]
    lines += [f"Checkpoint `{ck['path']}` ({where}; sha256 {ck['sha256'][:16]}…), "
              f"{ck.get('strategy') or '?'} pre-training.", ""]
    lines += ["Held-out validation pairs of each source language (the 100 per language training validates on; "
              "references: " + _ref_note(result) + "). "
              f"Decoded on CPU, fp32, {result['threads']} thread(s), engine {result['engine']}, "
              "output length bounded per sentence (1.5 × source pieces + 10).", ""]
    lines += ["Command:", "", "    " + command, ""]
    decoded_by = sorted({d["timing"]["command"] for d in result["decoding"].values() if (d.get("timing") or {}).get("command") not in (None, "", command)})
    for c in decoded_by:
        lines += ["It scored the hypotheses decoded earlier by:", "", "    " + c, ""]
    names = {b: b.replace("beam1", "greedy").replace("beam", "beam ") for b in beams}
    head = "| lang | train pairs | held out from | ref words | ref trained | NLL | " + " | ".join(f"BLEU {names[b]} | chrF {names[b]} | rep% {names[b]}" for b in beams) + " | len ratio |"
    lines += [head, "|---|---:|---|---:|---:|---:|" + "---:|" * (3 * len(beams) + 1)]
    refs = result["references"]
    train = result.get("train_pairs") or {}
    for lang in result["languages"] + ["all"]:
        if lang == "all":
            n = sum(r["pairs"] for r in refs.values())
            words = sum(r["words_per_line"] * r["pairs"] for r in refs.values()) / max(1, n)
            pooled: dict[str, int] = {}
            for r in refs.values():
                for k, v in (r.get("origins") or {}).items():
                    pooled[k] = pooled.get(k, 0) + v
            trained = sum(_trained(r) for r in refs.values())
            cells = ["**all**", f"{sum(v or 0 for v in train.values()):,}", _origins_cell(pooled), f"{words:.1f}", f"{trained:,}",
                     f"{result['nll']['all']:.3f}"]
        else:
            cells = [lang, f"{train[lang]:,}" if train.get(lang) else "–", _origins_cell(refs[lang].get("origins") or {}),
                     f"{refs[lang]['words_per_line']:.1f}", f"{_trained(refs[lang])}", f"{result['nll']['per_language'][lang]:.3f}"]
        for b in beams:
            sc = result["decoding"][b]["scores"][lang]
            cells += [f"{sc['bleu']:.2f}", f"{sc['chrf']:.2f}", f"{sc['repeat_pct']:.0f}"]
        lr = result["decoding"][beams[-1]]["scores"][lang]["len_ratio"]
        cells.append("–" if lr is None else f"{lr:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    first = result["decoding"][beams[0]]
    lines += [f"train pairs: the language's training pairs in the prepared folder. held out from: the pack files the 100 pairs "
              f"come from ({', '.join(f'{v} {k}' for k, v in ORIGIN_ABBREV.items())}). ref words: mean words per reference line. "
              f"ref trained: held-out pairs whose English reference (its token ids) is also a training target, of another "
              f"source language or of its own with another source. "
              f"NLL: source-language validation NLL (nats per target token, EOS included; model in eval mode, fp32, "
              f"batched as training validates: the pooled value is training's valid_nll). rep%: output lines with one word repeated 4+ times in a row (case-insensitive; "
              f"`mtmeta.scoring.repetition`). len ratio: hypothesis / reference length (sacreBLEU's hyp_len/ref_len, "
              f"{names[beams[-1]]}). **all**: the {first['scores']['all']['sentences']:,} pairs pooled (one corpus score, "
              f"not a mean of the rows).", ""]
    lines += [f"`{first['bleu_signature']}`", f"`{first['chrf_signature']}`", ""]
    groups = list(dict.fromkeys(g for d in result["decoding"].values() for g in d.get("groups", {})))
    if groups:
        lines += ["The same pairs pooled over the languages, by the pack file they come from and by whether the English "
                  "reference is also a training target (NTREX-128, WMT news and Tatoeba give the same English sentence for "
                  "several source languages; prepare holds out pairs, not English sentences).", ""]
        lines += ["| pairs | n | NLL | " + " | ".join(f"BLEU {names[b]} | chrF {names[b]}" for b in beams) + " |",
                  "|---|---:|---:|" + "---:|" * (2 * len(beams))]
        for g in groups:
            first_g = next(d["groups"][g] for d in result["decoding"].values() if g in d.get("groups", {}))
            cells = [g, f"{first_g['sentences']:,}", "–" if first_g.get("nll") is None else f"{first_g['nll']:.3f}"]
            for b in beams:
                sc = result["decoding"][b].get("groups", {}).get(g)
                cells += [f"{sc['bleu']:.2f}", f"{sc['chrf']:.2f}"] if sc else ["–", "–"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [""]
    timing = ", ".join(f"{names[b]} {d['seconds'] / 60:.1f} min" for b, d in result["decoding"].items() if d.get("seconds") is not None)
    lines += [f"Decoding time for the {first['scores']['all']['sentences']:,} sentences ({result['threads']} thread, beside other "
              f"work on the machine): {timing or 'not recorded'}; NLL {result['nll']['seconds']:.0f} s."]
    sub = first.get("training_validation_subset")
    lv = ck.get("last_validation") or {}
    if sub:
        lines += ["", f"Check against training's own validation: greedy on the first {sub['per_language']} pairs of each language with "
                  f"references decoded from ids gives BLEU {sub['bleu']:.2f} / chrF {sub['chrf']:.2f}; the checkpoint's last "
                  f"validation record says BLEU {lv.get('bleu', '?')} / chrF {lv.get('chrf', '?')}, NLL "
                  f"{lv.get('valid_nll', float('nan')):.4f} (here {result['nll']['all']:.4f})."]
    return "\n".join(lines) + "\n"


def _trained(ref: dict) -> int:
    return sum(v for k, v in (ref.get("reference_is_a_training_target") or {}).items() if k != "no")


ORIGIN_ABBREV = {"T": "tatoeba", "N": "ntrex128", "W": "WMT news", "C": "tico19"}


def _origins_cell(origins: dict[str, int]) -> str:
    names = {v: k for k, v in ORIGIN_ABBREV.items()}
    return " ".join(f"{names.get(k, k)}{v}" for k, v in sorted(origins.items(), key=lambda kv: -kv[1]))


def _ref_note(result: dict) -> str:
    refs = result["references"]
    got = sum(r["from_pack"] for r in refs.values())
    total = sum(r["pairs"] for r in refs.values())
    if got == total:
        return f"the pack's English line as prepare cleaned it, all {total:,} found by their token ids"
    return f"the pack's cleaned English line for {got:,} of {total:,} pairs, the stored ids decoded for the rest"


def write_per_language(result: dict, run: str, command: str, label: str = "", results_dir: Path = RESULTS_DIR) -> dict:
    from mtmeta.safe_io import atomic_write_text
    from mtmeta.scoring import write_json

    results_dir.mkdir(parents=True, exist_ok=True)
    md, js = results_dir / f"per_language_{run}.md", results_dir / f"per_language_{run}.json"
    write_json({"run": run, "label": label, "command": command, **result}, js)
    atomic_write_text(md, per_language_markdown(result, run, command, label), "report")
    return {"markdown": str(md), "json": str(js)}


# --- the progress table ------------------------------------------------------------------


def progress_rows(path: str | Path, after: int = 0) -> list[str]:
    """results/pretrain/README.md's progress-table rows (updates, target
    tokens, source valid NLL, BLEU, chrF) for a run's validations after
    update `after`; the best so far is marked."""
    run = read_run_log(path)
    best = run.best()
    rows = []
    for v in run.validations:
        if v["step"] <= after or not v["step"] or _value(v, ("tokens",)) is None:
            continue
        nll = _value(v, METRICS[0][1])
        bleu, chrf = _value(v, METRICS[1][1]), _value(v, METRICS[2][1])
        star = " (best so far)" if best is not None and v["step"] == best["step"] else ""
        rows.append(f"| | {v['step']:,}{star} | {v['tokens'] / 1e6:.1f}M | {'–' if nll is None else f'{nll:.3f}'} | "
                    f"{'–' if bleu is None else f'{bleu:.2f}'} | {'–' if chrf is None else f'{chrf:.1f}'} |")
    return rows


# --- command line ---------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.pretrain_report", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("curves", help="results/pretrain/curves.png from every pre-training run's train_log.jsonl")
    c.add_argument("recipe", nargs="?", help="compare recipe (its `pretrain` entries and their budgets), e.g. recipes/compare.yaml")
    c.add_argument("--log", action="append", metavar="NAME=PATH", help="a run's train_log.jsonl (adds a run or replaces the recipe's)")
    c.add_argument("--runs", nargs="+", metavar="NAME", help="only these runs (default: every run with a log)")
    c.add_argument("--output", default=str(RESULTS_DIR / "curves.png"))
    c.add_argument("--results-dir", default=str(RESULTS_DIR), help="where the committed log copies NAME_train_log.jsonl are")
    t = sub.add_parser("progress", help="results/pretrain/README.md's progress-table rows from a run's train_log.jsonl")
    t.add_argument("log", help="e.g. work/compare/pretrain/multitask/train_log.jsonl")
    t.add_argument("--after", type=int, default=0, help="only validations after this update")
    p = sub.add_parser("per-language", help="BLEU/chrF/NLL per source language on the held-out validation pairs")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--run", required=True, help="name in the output files: per_language_RUN.{md,json}")
    p.add_argument("--data", default="work/prepared-ulr", help="the prepared folder the model was trained on")
    p.add_argument("--pack", default="../shared/corpus", help="the corpus pack (for the references' text); '' to decode ids")
    p.add_argument("--beam", type=int, nargs="+", default=[1, 5], help="beam sizes (1: greedy)")
    p.add_argument("--langs", nargs="+", help="default: every source language of the checkpoint and the folder")
    p.add_argument("--batch-sentences", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: as it is)")
    p.add_argument("--engine", choices=["native", "ctranslate2"], default="native")
    p.add_argument("--model", help="with --engine ctranslate2: the `mtmeta export` folder of the same checkpoint")
    p.add_argument("--label", default="", help="shown in the title, e.g. 'intermediate: update 3,000'")
    p.add_argument("--hyp-dir", help="also write hypotheses, references and sources per language here")
    p.add_argument("--reuse-hyps", action="store_true", help="score the hypotheses an earlier run wrote into --hyp-dir (same pairs) instead of decoding")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.what == "progress":
            print("\n".join(progress_rows(args.log, args.after)))
            return 0
        if args.what == "curves":
            result = write_curves(args.recipe, args.log, args.output, Path(args.results_dir), log=log, only=args.runs)
        else:
            if any(b < 1 for b in args.beam):
                raise ConfigError("--beam: sizes >= 1")
            command = "python -m evaluation.pretrain_report " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
            result = per_language(args.checkpoint, args.data, args.pack or None, tuple(args.beam), args.langs, args.batch_sentences,
                                  args.threads, args.engine, args.model, args.hyp_dir, args.reuse_hyps, command, log=log)
            result = {**write_per_language(result, args.run, command, args.label, Path(args.results_dir)),
                      "all": {b: d["scores"]["all"] for b, d in result["decoding"].items()}}
    except MtmetaError as e:
        print(f"pretrain_report: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
