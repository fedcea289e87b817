"""The command line is generated from the config dataclasses, and every
config field is checked (type and range) when it is loaded."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

from data_prep.config import opt
from mtmeta import config as C
from mtmeta.cli import _with_preset, build_parser, main
from mtmeta.cliargs import add_config_arguments, apply_arguments
from mtmeta.errors import ConfigError

COMMANDS = {"prepare": C.PrepareConfig, "train": C.TrainConfig, "adapt": C.AdaptConfig, "evaluate": C.EvalConfig}


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _field_paths(cls, prefix=()):
    hints = get_type_hints(cls)
    for f in fields(cls):
        if not f.metadata.get("cli", True):
            continue
        if is_dataclass(hints[f.name]):
            yield from _field_paths(hints[f.name], prefix + (f.name,))
        else:
            yield ".".join(prefix + (f.name,)), f


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_is_a_flag_with_help_and_default(command: str) -> None:
    actions = {a.dest: a for a in _subparser(command)._actions}
    for path, f in _field_paths(COMMANDS[command]):
        action = actions.get(f"cfg.{path}")
        assert action is not None, f"{command}: no flag for {path}"
        assert f.metadata["help"] and "(default: " in action.help, (command, path)


def test_help_shows_the_config_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-steps MAX_STEPS budget: updates" in out and "(default: 0)" in out
    assert "--embedding {tables,ulr}" in out and "--meta-valid-lang" in out


@dataclass
class Sub:
    rate: float = opt(0.5, "a rate", min=0.0)


@dataclass
class New:
    steps: int = opt(3, "how many steps", min=1)
    mode: str = opt("a", "a mode", choices=("a", "b"))
    files: dict[str, str] = opt(help="files by language", factory=dict)
    sub: Sub = opt(help="a section", factory=Sub)


def test_a_new_config_field_appears_on_the_command_line_by_itself() -> None:
    p = argparse.ArgumentParser()
    add_config_arguments(p, New)
    args = p.parse_args(["--steps", "7", "--mode", "b", "--files", "ro=x.txt", "--sub-rate", "0.25"])
    cfg = apply_arguments(New(), args)
    assert (cfg.steps, cfg.mode, cfg.files, cfg.sub.rate) == (7, "b", {"ro": "x.txt"}, 0.25)
    assert apply_arguments(New(), p.parse_args([])) == New()  # absent flags change nothing


def test_flags_override_only_what_is_given_and_presets_keep_the_embedding(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"model": {"embedding": "ulr", "ulr_tau": 0.1}, "lr": 0.002, "max_steps": 5}}))
    args = build_parser().parse_args(["train", "--config", str(recipe), "--preset", "tiny", "--max-steps", "9", "--meta-variant", "maml"])
    from mtmeta.cli import _section

    cfg = _section(args.config, C.TrainConfig, "train")
    cfg = apply_arguments(dataclasses.replace(cfg, model=_with_preset(cfg.model, args.preset)), args)
    assert cfg.model.embedding == "ulr" and cfg.model.ulr_tau == 0.1  # not dropped by --preset
    assert cfg.model.embed_dim == C.MODEL_PRESETS["tiny"].embed_dim
    assert (cfg.lr, cfg.max_steps, cfg.meta.variant) == (0.002, 9, "maml")


def test_old_flag_names_still_parse() -> None:
    p = build_parser()
    a = p.parse_args(["adapt", "--train-files", "a.ro", "a.en", "--valid-files", "b.ro", "b.en", "--zero-shot", "--tune", "emb"])
    cfg = apply_arguments(C.AdaptConfig(), a)
    assert cfg.train_files == ["a.ro", "a.en"] and cfg.zero_shot and cfg.tune == "emb"
    a = p.parse_args(["prepare", "--vectors", "ro=v.vec", "--mono", "ro=m1", "--mono", "ro=m2", "--dictionary", "ro=d.txt", "--ulr-vectors"])
    cfg = apply_arguments(C.PrepareConfig(), a)
    assert cfg.vector_files == {"ro": "v.vec"} and cfg.mono_files == {"ro": ["m1", "m2"]} and cfg.dictionaries == {"ro": "d.txt"}
    assert cfg.ulr_vectors
    a = p.parse_args(["translate", "--lang", "ro", "--beam", "2", "--batch-size", "8", "--engine", "ctranslate2", "--model", "d", "--compute-type", "int8"])
    assert vars(a)["cfg.batch_sentences"] == 8 and a.model == "d"


# --- every field checked at load time (issue 14.5) -------------------------------------


@pytest.mark.parametrize(
    "cls, changes, message",
    [
        (C.TrainConfig, {"max_steps": -3}, "max_steps must be >= 0"),
        (C.TrainConfig, {"max_steps": 5, "lr": -1.0}, "lr must be > 0"),
        (C.TrainConfig, {"max_train_tokens": -100, "max_steps": 5}, "max_train_tokens must be >= 0"),
        (C.TrainConfig, {"max_steps": 5, "log_every": 0}, "log_every must be >= 1"),
        (C.PrepareConfig, {"valid_per_lang": -5}, "valid_per_lang must be >= 0"),
        (C.EvalConfig, {"max_sentences": -1}, "max_sentences must be >= 0"),
        (C.EvalConfig, {"beam": 0}, "beam must be >= 1"),
        (C.AdaptConfig, {"lr": -1.0}, "lr must be > 0"),
    ],
)
def test_out_of_range_fields_are_refused(cls, changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(cls(), **changes).validate()


def test_model_fields_and_types_are_checked() -> None:
    with pytest.raises(ConfigError, match="dropout must be >= 0"):
        C.TrainConfig(max_steps=1, model=C.ModelConfig(dropout=-0.5)).validate()
    with pytest.raises(ConfigError, match="lr: expected a number, got 'fast'"):
        C.from_dict(C.TrainConfig, {"lr": "fast"})
    with pytest.raises(ConfigError, match="must be an integer"):
        C.TrainConfig(max_steps=1.5).validate()


def _recipe(tmp_path: Path, **sections) -> Path:
    data = {"workdir": str(tmp_path / "w"), "train": {"max_steps": 2}, **sections}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"targets": []}, "targets is empty"),
        ({"adapt": {"tune": "everything"}}, "tune 'everything' unknown"),
        ({"evaluate": {"beam": -1}}, "beam must be >= 1"),
        ({"train": {"max_train_tokens": -100}}, "max_train_tokens must be >= 0"),
        ({"train": {"max_steps": 2, "strategy": "scratchy"}}, "strategy 'scratchy' unknown"),
    ],
)
def test_a_recipe_is_validated_whole_before_anything_runs(tmp_path: Path, capsys, sections, message) -> None:
    """Bad adapt/evaluate settings fail at once (exit 2, one line), not after prepare and train."""
    path = _recipe(tmp_path, **sections)
    assert main(["-q", "recipe", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "w" / "prepared").exists()


def test_set_overrides_any_recipe_field(tmp_path: Path) -> None:
    from mtmeta.cliargs import parse_sets

    path = _recipe(tmp_path)
    cfg = C.load_yaml(path, C.RecipeConfig, overrides=parse_sets(["train.max_minutes=1.5", "adapt.tune=emb", "targets=[ro, fi]"]))
    assert (cfg.train.max_minutes, cfg.adapt.tune, cfg.targets) == (1.5, "emb", ["ro", "fi"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["translate", "--checkpoint", "x.pt", "--lang", "ro", "--output", "missing_dir/x.en"], "does not exist"),
        (["evaluate", "--checkpoint", "x.pt", "--lang", "ro", "--output-dir", "FILE"], "is not a folder"),
        (["translate", "--checkpoint", "x.pt", "--lang", "ro", "--beam", "0"], "beam must be >= 1"),
        (["translate", "--checkpoint", "x.pt", "--lang", "ro", "--batch-size", "0"], "batch_sentences must be >= 1"),
        (["train", "--max-steps", "-3"], "max_steps must be >= 0"),
        (["train", "--max-steps", "2", "--lr", "-1"], "lr must be > 0"),
        (["train", "--max-steps", "2", "--output", "FILE"], "is not a folder"),
        (["recipe", "run", "BINARY"], "not a YAML text file"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path: Path, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "BINARY").write_bytes(bytes(range(256)))
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("mtmeta: error:") and err.count("\n") == 1


def test_max_tokens_below_the_longest_pair_is_one_line() -> None:
    from mtmeta.data import PairData, make_batches
    from mtmeta.errors import DataError

    data = PairData.from_lists([[5] * 30, [5] * 3], [[6] * 4, [6] * 4])
    assert len(make_batches(data, 64, 128)) >= 1
    with pytest.raises(DataError, match="max_tokens 16 is below the longest sentence pair"):
        make_batches(data, 16, 128)


def test_a_corrupt_vocabulary_inside_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    import torch

    from mtmeta.checkpoint import bundle_from_state, save_checkpoint
    from mtmeta.errors import CheckpointError
    from mtmeta.model import build_model

    class FakeVocab:
        proto = b"not a sentencepiece model"

    model = build_model(C.MODEL_PRESETS["tiny"], 10, {"de": 10})
    from mtmeta.checkpoint import Bundle

    save_checkpoint(tmp_path / "c.pt", Bundle(model, FakeVocab(), {"de": FakeVocab()}))
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    with pytest.raises(CheckpointError, match="corrupt"):
        bundle_from_state(state, tmp_path / "c.pt")
