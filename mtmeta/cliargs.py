"""Command-line flags generated from the typed config dataclasses.

Every field declared with `opt(...)` (data_prep/config.py, mtmeta/config.py)
becomes a flag: `--field-name` (nested sections: `--section-field-name`, e.g.
`--model-embed-dim`, `--meta-variant`), or the `flag` its metadata names
(e.g. `--embedding`, `--batch-size`); help text and choices come from the
metadata and `--help` shows the config's default. A new field therefore
appears on the command line by itself. Flags only override what the config
file (or the defaults) say: an absent flag changes nothing.

Types: int / float / str take one value; bool is `--flag` / `--no-flag`;
lists take several values (or the `nargs` of the metadata); mappings take
`KEY=VALUE`, repeatable. Fields of other kinds (lists of sources, the
comparison's tiers) are set in YAML, or with `--set section.field=VALUE`
on `mtmeta recipe run` / `mtmeta compare` (see `parse_sets`).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

PREFIX = "cfg."  # argparse dest of a config field: cfg.<path.to.field>


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "none"
    return str(value)


def _scalar(tp) -> bool:
    return tp in (int, float, str)


def _flag_name(path: list[str]) -> str:
    return "--" + "-".join(path).replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
                         only: tuple[str, ...] | None = None, choices: dict[str, list] | None = None,
                         title: str | None = None, _path: tuple[str, ...] = ()) -> None:
    """Flags for every command-line field of dataclass `cls` (nested sections
    included). `skip` / `only`: field paths ("model", "meta.variant") left
    out / kept; `choices`: choices given at run time (e.g. the registered
    strategies), by field path."""
    group = parser.add_argument_group(title) if title else parser
    hints = get_type_hints(cls)
    taken = {opt for action in parser._actions for opt in action.option_strings}
    for f in fields(cls):
        path = _path + (f.name,)
        key = ".".join(path)
        if key in skip or not f.metadata.get("cli", True):
            continue
        if only is not None and not any(key == o or key.startswith(o + ".") or o.startswith(key + ".") for o in only):
            continue
        tp = hints[f.name]
        if is_dataclass(tp):
            add_config_arguments(parser, tp, skip=skip, only=only, choices=choices,
                                 title=f"{key}: {f.metadata.get('help', '')}", _path=path)
            continue
        meta = f.metadata
        names = [n for n in (meta.get("flag"), _flag_name(path)) if n and n not in taken]
        if not names:
            continue
        names = list(dict.fromkeys(names))
        taken.update(names)
        help_text = meta.get("help", "")
        help_text = (help_text + f" (default: {_show(_default(f))})").replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": PREFIX + key, "default": None, "help": help_text}
        origin = get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif _scalar(tp):
            kwargs["type"] = tp
            allowed = (choices or {}).get(key) or meta.get("choices")
            if allowed:
                kwargs["choices"] = [c for c in allowed if c != ""] or None
                if "" in allowed:
                    kwargs["choices"] = None
        elif origin is list and _scalar(get_args(tp)[0]):
            kwargs["type"] = get_args(tp)[0]
            kwargs["nargs"] = meta.get("nargs", "+")
            if "metavar" in meta:
                kwargs["metavar"] = meta["metavar"]
        elif origin is dict and get_args(tp)[0] is str and (
            get_args(tp)[1] is str or get_origin(get_args(tp)[1]) is list
        ):
            kwargs["action"] = "append"
            kwargs["metavar"] = meta.get("metavar", "KEY=VALUE")
        else:
            continue  # lists of sources, tiers, ...: YAML (or --set)
        if tp is not bool and not kwargs.get("choices") and "metavar" not in kwargs:
            kwargs["metavar"] = f.name.upper()
        group.add_argument(*names, **kwargs)


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set on the command line: {field path: value}."""
    return {k[len(PREFIX):]: v for k, v in vars(args).items() if k.startswith(PREFIX) and v is not None}


def apply_arguments(cfg, args: argparse.Namespace):
    """`cfg` with the command line's values: nested sections are rebuilt with
    dataclasses.replace (so their __post_init__ sees the new values), maps
    take KEY=VALUE entries over what the config has."""
    return _apply(cfg, given(args), "")


def _apply(cfg, values: dict[str, Any], where: str):
    hints = get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
            continue
        tp = hints[head]
        if get_origin(tp) is dict:
            value = _merge_pairs(getattr(cfg, head), value, tp, _flag_name([*filter(None, where.split(".")), head]))
        changes[head] = value
    for head, sub in nested.items():
        changes[head] = _apply(getattr(cfg, head), sub, f"{where}.{head}" if where else head)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _merge_pairs(current: dict, specs: list[str], tp, flag: str) -> dict:
    out = {k: list(v) if isinstance(v, list) else v for k, v in current.items()}
    as_list = get_origin(get_args(tp)[1]) is list
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{flag} {spec!r}: expected KEY=VALUE (e.g. ro=FILE)")
        if as_list:
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    return out


def parse_sets(specs: list[str] | None) -> dict:
    """`--set train.max_minutes=5 --set adapt.tune=emb` -> a nested mapping to
    merge over a recipe's YAML before it is validated (values are YAML)."""
    out: dict = {}
    for spec in specs or []:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {spec!r}: expected SECTION.FIELD=VALUE (e.g. train.max_minutes=5)")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {spec!r}: {part} is set twice")
        node[parts[-1]] = parsed
    return out
