"""MODEL_CARD.md of a release (mtmeta/release.py): what the model is, the
data it was trained on and its licenses, the training budget, the sizes and
the scores, generated from the checkpoint and what it points to.

Sources, each optional (the card says what it could not find):
* the checkpoint: model config, layout, run_config (the training settings),
  train_state (updates, target tokens, training seconds), history (the
  source-language validations);
* the prepared folder named by run_config.data (or `data`): summary.json
  (pairs and tokens per language, contamination removed);
* the corpus pack that folder was prepared from: MANIFEST.tsv (sets, lines,
  licenses of the meta-train files) and the "Origins and licenses" table of
  its README.md;
* the run's train_log.jsonl (wall-clock segments).

The "Scores" section ends with a slot between `<!-- scores:begin -->` and
`<!-- scores:end -->` that other scripts fill (release.fill_card_scores).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .release import SCORES_BEGIN, SCORES_END


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pack_path(summary: dict | None) -> Path | None:
    for src in ((summary or {}).get("config") or {}).get("sources", []):
        if src.get("type") == "pack" and src.get("path"):
            return Path(src["path"])
    return None


def _manifest_rows(pack: Path) -> list[dict]:
    path = pack / "MANIFEST.tsv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


def _origins_table(pack: Path, names: set[str]) -> list[str]:
    """The rows of the pack README's "Origins and licenses" table whose name
    prefix matches a set the model was trained on (header kept)."""
    try:
        text = (pack / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = "origin" in line.lower() and "licen" in line.lower()
            continue
        if inside and line.startswith("|"):
            lines.append(line)
    if len(lines) < 2:
        return []
    keep = lines[:2]
    for row in lines[2:]:
        prefixes = [p.strip().strip("`").rstrip("*-") for p in row.split("|")[1].split(",")]
        if any(n.startswith(p) for p in prefixes if p for n in names):
            keep.append(row)
    return keep


def _fmt(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def build_card(state: dict, info: dict, checkpoint: str | Path, command: str = "", data: str | Path | None = None) -> str:
    """The card's text. `info`: write_release's files and sizes."""
    name = info["name"]
    cfg = state["model_config"]
    layout = state["layout"]["src_embed"]
    langs = list(layout["lang_table"])
    run = state.get("run_config") or {}
    ts = state.get("train_state") or state.get("snapshot") or {}
    history = state.get("history") or []
    data_dir = Path(data or run.get("data") or "")
    summary = _read_json(data_dir / "summary.json") if str(data_dir) not in ("", ".") else None
    pack = _pack_path(summary)
    out: list[str] = [f"# Model card: {name}", ""]
    out += [
        f"An mtmeta release (format {info['config']['format']}): a multilingual Transformer translating "
        f"{len(langs)} source languages into English, made to be adapted to a new language from a few hundred "
        "sentence pairs.",
        "",
        f"Made by `{command or 'mtmeta export --format release'}` on {time.strftime('%Y-%m-%d')} from "
        f"`{checkpoint}`.",
        "",
        "```bash",
        f"mtmeta translate --checkpoint models/{name} --lang {'de' if 'de' in langs or not langs else langs[0]} < input.txt   # a source language, directly",
        f"mtmeta adapt --checkpoint models/{name} --lang ro --data ../shared/corpus --output work/adapt-ro   # a new language",
        "```",
        "",
        "## Model",
        "",
        f"- fairseq Transformer, pre-norm: {cfg['encoder_layers']} encoder + {cfg['decoder_layers']} decoder layers, "
        f"d_model {cfg['embed_dim']}, FFN {cfg['ffn_dim']}, {cfg['heads']} heads, up to {cfg['max_positions']} pieces per sentence.",
    ]
    if layout.get("kind") == "ulr":
        out.append(
            f"- Source embedding: Universal Lexical Representation (temperature {layout['tau']}, {layout['num_universal']:,} "
            f"universal tokens, {layout['query_dim']}-d query and key vectors) plus a per-language table. The release keeps the "
            "English vectors (keys, and what a new language's queries are aligned to) and every source language's queries, "
            "so adaptation needs no prepared folder."
        )
    else:
        out.append("- Source embedding: one table per source language.")
    n_tables = len(layout["tables"])
    out += [
        f"- Vocabularies: English sentencepiece, {state['layout']['tgt_vocab_size']:,} pieces; "
        f"{n_tables} source table(s): " + ", ".join(f"{t} {n:,}" for t, n in layout["tables"].items()) + " pieces.",
        f"- Source languages: {', '.join(langs)}.",
        f"- Parameters: {info['parameters']:,} (the tied output projection counted once).",
        "",
        "## Files and sizes",
        "",
        f"Floating-point weights stored as {' and '.join(t for t in info['stored_types'] if 'float' in t)} (asked for: {info['dtype']}; "
        "read back as float32); every file ≤ 60 MB; sizes and SHA-256 in `manifest.json`, checked on every load.",
        "",
        "| file | what | bytes |",
        "|---|---|---:|",
    ]
    for fname, f in info["files"].items():
        out.append(f"| `{fname}` | {f['role']} | {f['bytes']:,} |")
    out += [f"| all (without this card) | | {info['bytes']:,} |", ""]

    out += ["## Training data", ""]
    if summary:
        counts, languages = summary.get("counts", {}), summary.get("languages", {})
        totals = summary.get("totals", {})
        cont = summary.get("contamination", {})
        out += [
            f"Prepared folder `{data_dir}` (`mtmeta prepare`), from the corpus pack `{pack or '?'}`, role meta-train only: "
            f"{_fmt(totals.get('train', '?'))} training pairs in {len(summary.get('train_langs', []))} languages, "
            f"{_fmt(totals.get('valid', '?'))} held out for validation. Before training, "
            f"{_fmt(cont.get('pairs_removed_english', '?'))} pairs whose English side and {_fmt(cont.get('pairs_removed_source', '?'))} "
            "whose source side occurs in any adapt, validation or test set of the target languages "
            f"({', '.join(summary.get('target_langs', []))}) were removed, and {_fmt(totals.get('duplicate', '?'))} exact duplicates. "
            "None of the target languages' sentences was trained on.",
            "",
            "| pair | training pairs | English pieces | validation pairs |",
            "|---|---:|---:|---:|",
        ]
        for lang in langs:
            c, lg = counts.get(lang, {}), languages.get(lang, {})
            out.append(f"| {lang}-en | {_fmt(c.get('train', '?'))} | {_fmt(lg.get('tgt_tokens', '?'))} | {_fmt(c.get('valid', '?'))} |")
        out.append("")
    else:
        out += [f"The prepared folder `{data_dir}` the model was trained on is not here: no per-language counts.", ""]

    out += ["## Licenses of the data", ""]
    rows = [r for r in _manifest_rows(pack) if r.get("role") == "meta-train" and r.get("pair", "").split("-")[0] in langs] if pack else []
    if rows:
        by_license: dict[str, dict] = {}
        for r in rows:
            e = by_license.setdefault(r.get("license", "?"), {"sets": set(), "files": 0, "lines": 0, "pairs": set()})
            e["sets"].add(r["name"])
            e["files"] += 1
            e["lines"] += int(r["lines"]) if r.get("lines", "").isdigit() else 0
            e["pairs"].add(r["pair"])
        out += [
            f"The meta-train files of `{pack}/MANIFEST.tsv` for these languages (lines before cleaning):",
            "",
            "| license | sets | files | language pairs | lines |",
            "|---|---|---:|---:|---:|",
        ]
        for lic, e in sorted(by_license.items(), key=lambda kv: -kv[1]["lines"]):
            sets = sorted(e["sets"])
            shown = ", ".join(sets[:4]) + (f", … ({len(sets)} in all)" if len(sets) > 4 else "")
            out.append(f"| {lic} | {shown} | {e['files']} | {len(e['pairs'])} | {e['lines']:,} |")
        origins = _origins_table(pack, {r["name"] for r in rows})
        if origins:
            out += ["", f"Origins (`{pack}/README.md`):", ""] + origins
        out += [
            "",
            "The weights are derived from these texts; whoever redistributes or uses the model takes on their terms "
            "(CC BY-SA 4.0 asks for attribution and share-alike; the WMT test sets are free for research use).",
            "",
        ]
    else:
        out += ["The corpus pack's MANIFEST.tsv was not found: licenses unknown here.", ""]

    out += ["## Training budget", ""]
    if ts or run:
        step, tokens = ts.get("step"), ts.get("tokens")
        seconds = ts.get("elapsed")
        minutes = next((h.get("minutes") for h in history if h.get("step") == step), None)
        out += [
            f"- Strategy: {run.get('strategy', '?')}; precision {run.get('precision', '?')} on {run.get('device', '?')} "
            f"with {run.get('threads', '?')} thread(s); batches of {_fmt(run.get('max_tokens', '?'))} tokens; peak learning rate "
            f"{run.get('lr', '?')}, warm-up {_fmt(run.get('warmup_tokens') or run.get('warmup_steps', '?'))} "
            f"{'target tokens' if run.get('warmup_tokens') else 'updates'}; language sampling temperature {run.get('temperature', '?')}; seed {run.get('seed', '?')}.",
            f"- At this checkpoint: {_fmt(step)} updates, {_fmt(tokens)} target tokens"
            + (f", {minutes:.1f} minutes of training (validation not counted)" if minutes is not None
               else f", {seconds / 60:.1f} minutes of training" if isinstance(seconds, (int, float)) else "")
            + ".",
            f"- Budget set for the run: max_train_tokens {_fmt(run.get('max_train_tokens', 0))}, max_steps {_fmt(run.get('max_steps', 0))}, "
            f"max_minutes {run.get('max_minutes', 0)}, patience {run.get('patience', 0)} validations on {run.get('select_metric', '?')}"
            + (f" ({100 * tokens / run['max_train_tokens']:.1f}% of the token budget spent)" if tokens and run.get("max_train_tokens") else "")
            + ".",
            f"- Run folder: `{run.get('output', '?')}` (train_log.jsonl, tensorboard).",
            "",
        ]
    else:
        out += ["The checkpoint holds no training state (budget unknown).", ""]

    out += ["## Scores", ""]
    if history:
        last = next((h for h in history if h.get("step") == ts.get("step")), history[-1])
        best = min(history, key=lambda h: h.get("valid_nll", float("inf")))
        n_valid = (summary or {}).get("totals", {}).get("valid", "?")
        out += [
            f"Source-language validation during training: per-token NLL on the {_fmt(n_valid)} held-out pairs of the source "
            f"languages, greedy BLEU / chrF (sacreBLEU) on {run.get('bleu_sentences', '?')} of them (the first ones of each "
            "language, equally many per language).",
            "",
            "| updates | target tokens | minutes | valid NLL | BLEU | chrF |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for h in history:
            mark = " (this model)" if h is last else ""
            out.append(
                f"| {_fmt(h.get('step'))}{mark} | {_fmt(h.get('tokens'))} | {h.get('minutes', '')} | {h.get('valid_nll', float('nan')):.3f} "
                f"| {h.get('bleu', float('nan')):.2f} | {h.get('chrf', float('nan')):.2f} |"
            )
        out += ["", f"Best validation NLL {best.get('valid_nll', float('nan')):.4f} at update {_fmt(best.get('step'))}.", ""]
    else:
        out += ["No validation history in the checkpoint.", ""]
    out += [
        "Adapted and zero-shot scores on the target languages' test sets (filled by the scripts that measure them):",
        "",
        SCORES_BEGIN,
        "(none yet)",
        SCORES_END,
        "",
        "## Limits",
        "",
        "- Trained on news, Tatoeba and similar short sentences; other domains will translate worse.",
        "- Into English only. Output length is bounded by the input's (1.5 × source pieces + 10).",
        "",
    ]
    return "\n".join(out)


__all__ = ["build_card"]
