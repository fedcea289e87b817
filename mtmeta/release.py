"""Released models: a folder that `adapt`, `translate`, `evaluate` and
`export` read as they read a checkpoint, without the prepared folder.

    models/<name>/
      manifest.json                  format version; bytes and SHA-256 of every file
      model.json                     model config, layout, tensor index, vocabularies, provenance
      weights-00001-of-0000N.pt      the weights, split so that no file exceeds 60 MB
      en.model, src-<table>.model    the sentencepiece models (English; each source table)
      MODEL_CARD.md                  data, budget, sizes, scores, licenses

Weights only: no optimizer state, RNG or sampler. Floating-point tensors are
stored in float16 by default (`dtype`) and come back as float32, the type
the model computes in; integer buffers (ULR key ids) are stored as they are.
Why float16 rather than bfloat16: the weights of these models lie well
inside fp16's range (the stand-in's largest |w| is 3.0), where fp16's 11-bit
significand rounds 8x closer than bf16's 8 bits (relative error 2e-4 against
1.7e-3 on every tensor) at the same size; greedy output on 200 held-out
source sentences: 199/200 lines identical to the fp32 checkpoint with fp16,
182/200 with bf16 (results/release/equivalence.json). A tensor that fp16
would hold worse than bf16 (values beyond 65504, or mostly below fp16's
normal range) is stored in bfloat16 instead; model.json records each
tensor's stored type.
Everything a new language needs is in the weights: with ULR, the English
vectors a new language's queries are aligned to (`en_vectors`), the
universal keys (`key_ids`) and every source language's queries.

Shards are written with `torch.save` and read back with
`weights_only=True`: plain tensors, nothing that runs code on load. A tensor
larger than a shard is cut along its first dimension. Tied tensors (the
decoder's input embedding and output projection) are stored once.

Reading verifies every model file against the manifest (size, then
SHA-256) before it is used; a missing, truncated or altered file, or a
missing or unreadable manifest, is one `CheckpointError` line naming the
file. The model card is listed in the manifest too but not checked on load
(it is documentation; `fill_card_scores` rewrites a section of it and
updates its manifest entry).

This module imports nothing of the model: it turns a checkpoint's state
(`mtmeta.checkpoint.read_checkpoint`) into a folder and a folder back into
the same kind of state.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError
from .safe_io import check_replaceable_folder, sha256_file, staged_folder

FORMAT = 1
KIND = "mtmeta-release"
MANIFEST = "manifest.json"
CONFIG = "model.json"
CARD = "MODEL_CARD.md"
MAX_FILE_BYTES = 60_000_000  # "each file <= 60 MB": 60 * 10^6, below 60 MiB as well
_PER_TENSOR = 1024  # torch.save's zip entry, alignment and pickle per tensor (a few hundred bytes), rounded up
_MARGIN = 64 * 1024  # and per file (pickle header, zip directory); checked after writing
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
CHECKPOINT_FORMAT = 1  # the state read_release returns is shaped like mtmeta.checkpoint's format 1
SCORES_BEGIN = "<!-- scores:begin -->"
SCORES_END = "<!-- scores:end -->"


def is_release(path: str | Path) -> bool:
    """A folder given where a checkpoint is expected is read as a release
    (and refused with one line if it is not a valid one)."""
    return Path(path).is_dir()


# --- writing ------------------------------------------------------------------------


def _unique_tensors(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict without tied duplicates: (tensors, {alias: stored name})."""
    seen: dict[tuple, str] = {}
    out, aliases = {}, {}
    for name, t in sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        out[name] = t
    return out, aliases


def _pieces(name: str, t: torch.Tensor, limit: int) -> list[tuple[str, torch.Tensor]]:
    """`t` whole, or cut along dim 0 into parts of at most `limit` bytes."""
    nbytes = t.numel() * t.element_size()
    if nbytes <= limit or t.dim() == 0 or t.shape[0] < 2:
        if nbytes > limit:
            raise ConfigError(f"release: tensor {name} ({nbytes} bytes) does not fit a {limit}-byte file and cannot be cut")
        return [(name, t)]
    row = max(1, nbytes // t.shape[0])
    rows = max(1, limit // row)
    return [(f"{name}#{i}", part) for i, part in enumerate(torch.split(t, rows, dim=0))]


def _stored(t: torch.Tensor, dtype: str) -> torch.Tensor:
    """`t` as stored: integers as they are; floats in `dtype`. With float16,
    a tensor that fp16 represents worse than bf16 (values beyond fp16's
    range, or mostly below its normal range) is stored in bfloat16 instead."""
    if not t.is_floating_point():
        return t.contiguous()
    out = t.to(DTYPES[dtype])
    if dtype == "float16" and t.numel():
        ref = t.float()
        scale = ref.norm().clamp_min(1e-30)
        bf = t.to(torch.bfloat16)
        if not torch.isfinite(out).all() or (out.float() - ref).norm() / scale > (bf.float() - ref).norm() / scale:
            out = bf
    return out.contiguous()


def write_release(state: dict, output: str | Path, dtype: str = "float16", max_file_bytes: int = MAX_FILE_BYTES,
                  card=None, provenance: dict | None = None, force: bool = False, log=None) -> dict:
    """Write the release folder of a checkpoint's `state` to `output`.

    `card(info) -> str`: the model card's text, given the release's files
    and sizes (info); `provenance`: recorded in model.json. Written into a
    temporary folder beside `output` and renamed, so a failed export leaves
    no folder that looks complete. Returns a summary (files, bytes)."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if max_file_bytes < 8192:
        raise ConfigError("release: max_file_bytes must be at least 8 KiB")
    log = log or (lambda *_: None)
    out = Path(output)
    check_replaceable_folder(out, force, MANIFEST, "release")
    sd = state["model"]
    tensors, aliases = _unique_tensors(sd)
    limit = max_file_bytes - min(_MARGIN, max_file_bytes // 8)
    index: dict[str, dict] = {}
    parts: list[tuple[str, torch.Tensor]] = []
    for name, t in tensors.items():
        stored = _stored(t.detach().to("cpu"), dtype)
        pieces = _pieces(name, stored, limit - _PER_TENSOR)
        index[name] = {"dtype": str(t.dtype).replace("torch.", ""), "stored": str(stored.dtype).replace("torch.", ""),
                       "shape": list(t.shape), "parts": [p for p, _ in pieces]}
        parts += pieces
    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    used = 0
    for key, t in parts:
        n = t.numel() * t.element_size() + _PER_TENSOR
        if shards[-1] and used + n > limit:
            shards.append([])
            used = 0
        shards[-1].append((key, t))
        used += n
    names = [f"weights-{i + 1:05d}-of-{len(shards):05d}.pt" for i in range(len(shards))]
    where = {}
    for fname, shard in zip(names, shards):
        for key, _ in shard:
            where[key] = fname
    for info in index.values():
        info["files"] = sorted({where[p] for p in info["parts"]})

    with staged_folder(out) as tmp:  # check_replaceable_folder allowed `out`: new, empty or an earlier one
        roles: dict[str, str] = {}
        for fname, shard in zip(names, shards):
            torch.save({k: t.clone() for k, t in shard}, tmp / fname)  # clone: a split part would save its whole storage
            roles[fname] = "weights"
        (tmp / "en.model").write_bytes(state["tgt_vocab"])
        roles["en.model"] = "vocabulary"
        src_files = {}
        for table, proto in state["src_vocabs"].items():
            src_files[table] = f"src-{table}.model"
            (tmp / src_files[table]).write_bytes(proto)
            roles[src_files[table]] = "vocabulary"
        layout = state["layout"]
        config = {
            "format": FORMAT,
            "kind": KIND,
            "model_config": state["model_config"],
            "layout": layout,
            "dtype": dtype,
            "tensors": index,
            "aliases": aliases,
            "vocabularies": {"en": "en.model", "src": src_files},
            "languages": dict(layout["src_embed"]["lang_table"]),
            "parameters": int(sum(t.numel() for t in tensors.values() if t.is_floating_point())),
            "provenance": provenance or {},
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        roles[CONFIG] = "config"
        files = {n: {"bytes": (tmp / n).stat().st_size, "role": roles[n]} for n in sorted(roles)}
        stored_types = sorted({i["stored"] for i in index.values()})
        info = {"output": str(out), "name": out.name, "dtype": dtype, "stored_types": stored_types, "files": files, "parameters": config["parameters"],
                "weights_bytes": sum(f["bytes"] for f in files.values() if f["role"] == "weights"),
                "bytes": sum(f["bytes"] for f in files.values()), "config": config}
        if card is not None:
            (tmp / CARD).write_text(card(info), encoding="utf-8")
            roles[CARD] = "card"
        _write_manifest(tmp, roles)
        manifest = read_manifest(tmp)
        # weights within the asked limit (they are split to fit it); every file within 60 MB
        too_big = [n for n, f in manifest["files"].items()
                   if f["bytes"] > (max_file_bytes if f["role"] == "weights" else MAX_FILE_BYTES)]
        if too_big:
            raise ConfigError(f"release: {', '.join(too_big)} larger than allowed ({max_file_bytes} bytes for weights, "
                              f"{MAX_FILE_BYTES} for any file)")
    total = sum(f["bytes"] for f in manifest["files"].values())
    log(f"released {out}: {len(names)} weight file(s), {dtype}, {total / 1e6:.1f} MB in all, languages {', '.join(config['languages'])}")
    return {"output": str(out), "dtype": dtype, "bytes": total, "parameters": config["parameters"],
            "files": {n: f["bytes"] for n, f in manifest["files"].items()}}


def _write_manifest(folder: Path, roles: dict[str, str]) -> None:
    import mtmeta

    manifest = {
        "kind": KIND,
        "format_version": FORMAT,
        "mtmeta_version": mtmeta.__version__,
        "files": {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n), "role": roles[n]}
                  for n in sorted(roles)},
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


# --- reading ------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict:
    p = Path(folder)
    path = p / MANIFEST
    if not path.is_file():
        hint = f"; for a run folder give its checkpoint file, e.g. {p / 'best.pt'}" if (p / "best.pt").is_file() else ""
        raise CheckpointError(
            f"{path}: missing: {p} is a folder but not an mtmeta release (a release is made by `mtmeta export --format release`){hint}"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}); the release is damaged, copy or export it again") from None
    ok = (isinstance(manifest, dict) and manifest.get("kind") == KIND and isinstance(manifest.get("files"), dict)
          and all(isinstance(f, dict) and isinstance(f.get("bytes"), int) and isinstance(f.get("sha256"), str)
                  for f in manifest["files"].values()))
    if not ok:
        raise CheckpointError(f"{path}: not an mtmeta release manifest (no kind {KIND!r} with files, bytes and sha256); export it again")
    if manifest.get("format_version") != FORMAT:
        raise CheckpointError(
            f"{path}: release format {manifest.get('format_version')!r}; this mtmeta reads format {FORMAT} (update mtmeta or export again)"
        )
    for name in manifest["files"]:
        if Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{path}: file name {name!r} is not a plain file name; the manifest is damaged")
    return manifest


def verify_release(folder: str | Path, include_card: bool = False) -> dict:
    """Every file the manifest lists (the card only with include_card):
    present, of its recorded size, then of its recorded SHA-256. Returns the
    manifest; the first problem is one CheckpointError naming the file."""
    p = Path(folder)
    manifest = read_manifest(p)
    files = {n: f for n, f in manifest["files"].items() if include_card or f.get("role") != "card"}
    for name in (CONFIG,):
        if name not in files:
            raise CheckpointError(f"{p / MANIFEST}: does not list {name}; the release is incomplete, export it again")
    for name, f in files.items():
        path = p / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (listed in {MANIFEST}); the release is incomplete, copy or export it again")
        size = path.stat().st_size
        if size != f["bytes"]:
            what = "truncated" if size < f["bytes"] else "longer than recorded"
            raise CheckpointError(f"{path}: {size} bytes, {MANIFEST} says {f['bytes']} ({what}); copy or export the release again")
    for name, f in files.items():
        if sha256_file(p / name) != f["sha256"]:
            raise CheckpointError(f"{p / name}: SHA-256 does not match {MANIFEST} (damaged or modified); copy or export the release again")
    return manifest


def read_release(folder: str | Path) -> dict:
    """The release as checkpoint-shaped state (mtmeta.checkpoint format 1):
    model_config, layout, float32 weights, vocabularies; plus `release`
    (model.json without the tensor index) and what it was made from."""
    p = Path(folder)
    manifest = verify_release(p)
    listed = manifest["files"]
    try:
        config = json.loads((p / CONFIG).read_text(encoding="utf-8"))
        index, aliases, vocabs = config["tensors"], config["aliases"], config["vocabularies"]
        needed = {CONFIG, vocabs["en"], *vocabs["src"].values(), *(f for t in index.values() for f in t["files"])}
        config["model_config"], config["layout"]  # noqa: B018 (present)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{p / CONFIG}: not a readable release config ({type(e).__name__}); export it again") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{p / CONFIG}: release format {config.get('format')!r}; this mtmeta reads format {FORMAT}")
    unlisted = sorted(n for n in needed if n not in listed)
    if unlisted:
        raise CheckpointError(f"{p / unlisted[0]}: used by {CONFIG} but not listed in {MANIFEST}; export the release again")
    loaded: dict[str, torch.Tensor] = {}
    for fname in sorted({f for t in index.values() for f in t["files"]}):
        try:
            shard = torch.load(p / fname, map_location="cpu", weights_only=True)
        except Exception as e:  # checksummed, so only a foreign or broken writer gets here
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{p / fname}: not a readable weight file ({msg})") from None
        if not isinstance(shard, dict) or not all(isinstance(t, torch.Tensor) for t in shard.values()):
            raise CheckpointError(f"{p / fname}: not a weight file of an mtmeta release")
        loaded.update(shard)
    sd: dict[str, torch.Tensor] = {}
    for name, info in index.items():
        try:
            pieces = [loaded[k] for k in info["parts"]]
        except KeyError as e:
            raise CheckpointError(f"{p / info['files'][0]}: lacks tensor {e.args[0]!r} that {CONFIG} lists; export the release again") from None
        t = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
        if list(t.shape) != info["shape"]:
            raise CheckpointError(f"{p / info['files'][0]}: tensor {name} has shape {list(t.shape)}, {CONFIG} says {info['shape']}")
        sd[name] = t.to(getattr(torch, info["dtype"]))
    for alias, name in aliases.items():
        sd[alias] = sd[name]
    src_vocabs = {table: (p / f).read_bytes() for table, f in vocabs["src"].items()}
    release = {k: v for k, v in config.items() if k != "tensors"}
    release["path"] = str(p)
    release["manifest_sha256"] = sha256_file(p / MANIFEST)
    prov = config.get("provenance") or {}
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": config["model_config"],
        "layout": config["layout"],
        "model": sd,
        "tgt_vocab": (p / vocabs["en"]).read_bytes(),
        "src_vocabs": src_vocabs,
        "history": prov.get("history", []),
        "release": release,
    }


# --- the model card's score slot ------------------------------------------------------------


def fill_card_scores(folder: str | Path, markdown: str) -> None:
    """Replace the text between the card's score markers with `markdown`
    and update the card's entry in the manifest (size and SHA-256)."""
    p = Path(folder)
    manifest = read_manifest(p)
    card = p / CARD
    text = card.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(SCORES_BEGIN) + r".*?" + re.escape(SCORES_END), re.S)
    if not pattern.search(text):
        raise ConfigError(f"{card}: has no score slot ({SCORES_BEGIN} ... {SCORES_END})")
    text = pattern.sub(lambda _: f"{SCORES_BEGIN}\n{markdown.strip()}\n{SCORES_END}", text)
    tmp = card.with_name(card.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, card)
    manifest["files"][CARD] = {"bytes": card.stat().st_size, "sha256": sha256_file(card), "role": "card"}
    tmp = p / (MANIFEST + ".tmp")  # only the card's entry changes: a damaged model file stays detectable
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p / MANIFEST)


__all__ = [
    "CARD", "CONFIG", "DTYPES", "FORMAT", "MANIFEST", "MAX_FILE_BYTES", "fill_card_scores", "is_release",
    "read_manifest", "read_release", "sha256_file", "verify_release", "write_release",
]
