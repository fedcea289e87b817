"""Model, language tables, parameter selection, checkpoints and the training
engine (resume equivalence, budgets)."""
from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.vocab import EOS, N_SPECIAL, PAD
from mtmeta.adaptation import adapt
from mtmeta.checkpoint import load_bundle, read_checkpoint, save_checkpoint
from mtmeta.data import PairData, collate, collate_source
from mtmeta.errors import CheckpointError
from mtmeta.model import LanguageTables, build_model
from mtmeta.strategies import select_parameters
from mtmeta.strategies.supervised import SupervisedStrategy
from mtmeta.training import train

from conftest import adapt_config, quiet, tiny_model, train_config


def toy_batch(src_vocab: int, tgt_vocab: int, n: int = 3, seed: int = 0) -> tuple[PairData, dict]:
    rng = np.random.default_rng(seed)
    src = [rng.integers(N_SPECIAL, src_vocab, size=k).tolist() for k in (5, 3, 7)[:n]]
    tgt = [rng.integers(N_SPECIAL, tgt_vocab, size=k).tolist() for k in (4, 6, 2)[:n]]
    data = PairData.from_lists(src, tgt)
    return data, collate(data, list(range(n)))


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- model


def test_forward_shape_and_collate() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model(), 50, {"de": 30, "fr": 20})
    data, batch = toy_batch(30, 50)
    ni = batch["net_input"]
    assert ni["src_tokens"].shape == (3, 8)  # longest source 7 + EOS
    assert ni["src_lengths"].tolist() == [6, 4, 8]
    assert batch["target"].shape == (3, 7)
    assert batch["ntokens"] == 4 + 6 + 2 + 3
    # Decoder input is EOS + target[:-1]; targets end in EOS, padding is PAD.
    assert ni["prev_output_tokens"][:, 0].tolist() == [EOS] * 3
    assert batch["target"][2].tolist() == data.tgt[2].tolist() + [EOS] + [PAD] * 4
    model.eval()
    logits, _ = model(**ni)
    assert logits.shape == (3, 7, 50)
    assert torch.isfinite(logits).all()


def test_collate_offsets_move_only_non_special_ids() -> None:
    batch = collate_source([[4, 5], [7]], src_offset=100)
    assert batch["net_input"]["src_tokens"].tolist() == [[104, 105, EOS], [107, EOS, PAD]]


def test_language_tables_keep_languages_apart() -> None:
    torch.manual_seed(0)
    emb = LanguageTables(8)
    emb.add_language("de", 10)
    emb.add_language("fr", 12)
    assert emb.offset("de") == 0 and emb.offset("fr") == 6  # de owns global ids 4..9, fr 10..17
    assert emb.num_embeddings == 4 + 6 + 8
    de_ids = torch.tensor([[4, 5, 9, EOS, PAD]])
    fr_ids = torch.tensor([[4, 11, EOS]]) + torch.tensor([[emb.offset("fr"), emb.offset("fr"), 0]])
    de_before, fr_before = emb(de_ids).clone(), emb(fr_ids).clone()
    assert torch.equal(de_before[0, 0], emb.tables["de"].weight[0])
    assert torch.equal(fr_before[0, 0], emb.tables["fr"].weight[0])
    assert not torch.equal(de_before[0, 0], fr_before[0, 0])  # same local id, different languages
    assert torch.equal(de_before[0, 4], torch.zeros(8))  # padding embeds to zero

    emb.add_language("ro", 7)
    assert emb.offset("ro") == 14 and emb.num_embeddings == 4 + 6 + 8 + 3
    assert torch.equal(emb(de_ids), de_before)
    assert torch.equal(emb(fr_ids), fr_before)
    ro_ids = torch.tensor([[4 + emb.offset("ro")]])
    assert torch.equal(emb(ro_ids)[0, 0], emb.tables["ro"].weight[0])

    # Joint mode: a language sharing a table gets the same offset and rows.
    emb.add_language("it", None, table="fr")
    assert emb.offset("it") == emb.offset("fr")
    assert emb.languages() == ["de", "fr", "ro", "it"]
    assert LanguageTables.from_layout(8, emb.layout()).layout() == emb.layout()


@pytest.mark.parametrize(
    "tune, trainable",
    [("all", {"src_embed", "encoder", "decoder"}), ("emb_enc", {"src_embed", "encoder"}), ("emb", {"src_embed"})],
)
def test_select_parameters(tune: str, trainable: set[str]) -> None:
    model = build_model(tiny_model(), 40, {"de": 20, "fr": 20})
    groups = model.parameter_groups()
    chosen = select_parameters(model, tune)
    assert {id(p) for p in chosen} == {id(p) for g in trainable for p in groups[g]}
    for name, params in groups.items():
        assert params, name
        assert all(p.requires_grad == (name in trainable) for p in params), name
    # The groups cover every parameter exactly once.
    all_ids = [id(p) for g in groups.values() for p in g]
    assert len(all_ids) == len(set(all_ids)) == len(list(model.parameters()))


@pytest.mark.parametrize("tune", ["emb_enc", "emb"])
def test_frozen_output_weight_is_not_expanded_per_sentence(tune: str) -> None:
    """With the tied output weight frozen, torch.matmul on fairseq's transposed
    decoder features fell back to a batched matmul over one copy of the [V, C]
    weight per sentence (adapting emb / emb_enc ran ~2x slower per step than
    tuning everything). No op may see a tensor of that size."""
    vocab, n = 60, 3
    model = build_model(tiny_model(), vocab, {"de": 30})
    select_parameters(model, tune)
    _, batch = toy_batch(30, vocab, n=n)
    with torch.profiler.profile(record_shapes=True) as prof:
        logits, _ = model(**batch["net_input"])
        logits.float().sum().backward()
    expanded = n * vocab * model.cfg.embed_dim
    sizes = [
        (e.key, shape)
        for e in prof.key_averages(group_by_input_shape=True)
        for shape in e.input_shapes
        if shape and int(np.prod(shape)) >= expanded
    ]
    assert not sizes, sizes


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bundle, state = load_bundle(tiny_checkpoint)
    assert bundle.languages() == ["de", "es", "fr"]
    assert state["train_state"]["step"] == 12
    copy = tmp_path / "copy.pt"
    save_checkpoint(copy, bundle, note="hello")
    again, state2 = load_bundle(copy)
    assert state2["note"] == "hello"
    assert states_equal(bundle.model.state_dict(), again.model.state_dict())
    assert again.tgt_vocab.proto == bundle.tgt_vocab.proto
    assert {k: v.proto for k, v in again.src_vocabs.items()} == {k: v.proto for k, v in bundle.src_vocabs.items()}
    ids = bundle.src_vocab("fr").encode_batch(["Je suis là.", "Merci beaucoup."])
    batch = collate_source(ids, bundle.src_offset("fr"))
    batch["net_input"]["prev_output_tokens"] = torch.tensor([[EOS, 5, 6], [EOS, 7, 8]])
    for m in (bundle.model, again.model):
        m.eval()
    with torch.no_grad():
        a, _ = bundle.model(**batch["net_input"])
        b, _ = again.model(**batch["net_input"])
    assert torch.equal(a, b)
    assert not (tmp_path / "copy.pt.tmp").exists()


def test_truncated_checkpoint_raises(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    bad = tmp_path / "half.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="half.pt.*truncated or corrupt"):
        load_bundle(bad)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_bundle(empty)
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path / "missing.pt")


def test_foreign_checkpoints_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an mtmeta checkpoint"):
        read_checkpoint(plain)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": 1, "model": {}, "obj": Path("x")}, pickled)  # needs unpickling a class
    with pytest.raises(CheckpointError):
        read_checkpoint(pickled)


# ---------------------------------------------------------------- decoding


def test_translate_keeps_input_order(adapted_checkpoint: Path) -> None:
    from mtmeta.decoding import translate

    bundle, _ = load_bundle(adapted_checkpoint)
    # A barely trained model says the same thing for everything; random
    # decoder weights make outputs depend on the input, so order is visible.
    torch.manual_seed(7)
    with torch.no_grad():
        for p in bundle.model.parameters():
            p.normal_(0, 0.5)
    sentences = ["Bună ziua.", "Mulțumesc foarte mult pentru ajutor!", "", "Unde este gara?", "Bună ziua."]
    hyps = translate(bundle, "ro", sentences, beam=2, batch_sentences=8)
    assert len(hyps) == 5 and all(isinstance(h, str) and "\n" not in h for h in hyps)
    assert hyps[0] == hyps[4] and hyps[0] != ""
    assert len(set(hyps)) >= 3  # different inputs, different outputs, even from a barely trained model
    # Same batch in another order: the same translation for each sentence.
    assert translate(bundle, "ro", sentences[::-1], beam=2, batch_sentences=8) == hyps[::-1]
    assert translate(bundle, "ro", [], beam=2) == []
    for mode in (True, False):  # decoding runs in eval mode and restores the caller's mode
        bundle.model.train(mode)
        assert translate(bundle, "ro", sentences[:1], beam=1) and bundle.model.training is mode


# ---------------------------------------------------------------- engine


def run_train(prepared: Path, out: Path, steps: int, resume: bool, init_seed: int | None = 0, **kw) -> dict:
    if init_seed is not None:
        torch.manual_seed(init_seed)  # model init happens before the engine seeds torch
    settings = {"validate_every": 3, "bleu_sentences": 2, "max_tokens": 300, **kw}
    cfg = train_config(prepared, out, max_steps=steps, **settings)
    return train(cfg, log=quiet, progress=False, resume=resume)


def last_state(out: Path) -> dict:
    return read_checkpoint(out / "last.pt")


def test_training_is_deterministic_and_resume_is_equivalent(prepared: Path, tmp_path: Path) -> None:
    a = run_train(prepared, tmp_path / "a", 8, resume=False)
    a2 = run_train(prepared, tmp_path / "a2", 8, resume=False)
    sa, sa2 = last_state(tmp_path / "a"), last_state(tmp_path / "a2")
    assert a["step"] == 8 and a["tokens"] > 0
    assert states_equal(sa["model"], sa2["model"]), "two identical runs differ: nothing below can be compared"

    # Half the budget, then a new engine resumes from last.pt for the rest.
    b1 = run_train(prepared, tmp_path / "b", 4, resume=False)
    assert b1["step"] == 4
    initial = last_state(tmp_path / "b")["model"]
    assert not states_equal(initial, sa["model"])
    b = run_train(prepared, tmp_path / "b", 8, resume=True, init_seed=123)  # different init: resume must overwrite it
    sb = last_state(tmp_path / "b")
    assert b["step"] == 8 and b["tokens"] == a["tokens"]
    assert states_equal(sa["model"], sb["model"])
    lr = lambda st: [g["lr"] for g in st["train_state"]["optimizer"]["param_groups"]]  # noqa: E731
    assert lr(sb) == lr(sa) and lr(sa)[0] > 0
    # Validations at 0, 3, 6 and the end, whether resumed or not (plus b's stop at 4).
    assert [h["step"] for h in sa["history"]] == [0, 3, 6, 8]
    assert [h["step"] for h in sb["history"]] == [0, 3, 4, 6, 8]

    # Resuming a finished run does no more steps.
    c = run_train(prepared, tmp_path / "b", 8, resume=True)
    assert c["step"] == 8 and states_equal(last_state(tmp_path / "b")["model"], sa["model"])


def test_resume_after_sigterm_is_equivalent(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    straight = run_train(prepared, tmp_path / "a", 6, resume=False, save_every=2)
    original = SupervisedStrategy.train_step

    def step_then_term(self, engine):
        stats = original(self, engine)
        if engine.step == 2:  # the third step: SIGTERM arrives during it
            engine._on_signal(signal.SIGTERM, None)
        return stats

    monkeypatch.setattr(SupervisedStrategy, "train_step", step_then_term)
    with pytest.raises(KeyboardInterrupt):
        run_train(prepared, tmp_path / "b", 6, resume=False, save_every=2)
    assert last_state(tmp_path / "b")["train_state"]["step"] == 3
    monkeypatch.undo()
    resumed = run_train(prepared, tmp_path / "b", 6, resume=True, init_seed=7, save_every=2)
    assert resumed["step"] == straight["step"] == 6 and resumed["tokens"] == straight["tokens"]
    assert states_equal(last_state(tmp_path / "a")["model"], last_state(tmp_path / "b")["model"])


def test_logged_train_loss_is_the_mean_over_the_logged_window(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    seen = []
    original = SupervisedStrategy.train_step

    def recording(self, engine):
        stats = original(self, engine)
        seen.append((stats["loss"], stats["ntokens"]))
        return stats

    monkeypatch.setattr(SupervisedStrategy, "train_step", recording)
    run_train(prepared, tmp_path / "w", 6, resume=False, bleu_sentences=0, log_every=3, validate_every=0)
    log = [json.loads(line) for line in (tmp_path / "w" / "train_log.jsonl").read_text().splitlines()]
    records = [r for r in log if "loss" in r]
    assert [(r["step"], r["loss_steps"]) for r in records] == [(3, 3), (6, 3)]
    for r, window in zip(records, (seen[:3], seen[3:])):
        mean = sum(loss * n for loss, n in window) / sum(n for _, n in window)
        assert r["loss"] == pytest.approx(mean)
        assert r["loss"] != pytest.approx(window[-1][0])  # not the last batch's alone


def test_same_seed_same_result_without_outside_seeding(prepared: Path, tmp_path: Path) -> None:
    run_train(prepared, tmp_path / "a", 2, resume=False, init_seed=None, bleu_sentences=0)
    torch.rand(10)  # anything else using the global generator in between
    run_train(prepared, tmp_path / "b", 2, resume=False, init_seed=None, bleu_sentences=0)
    assert states_equal(last_state(tmp_path / "a")["model"], last_state(tmp_path / "b")["model"])


def test_token_budget_stops_training(prepared: Path, tmp_path: Path) -> None:
    r = run_train(prepared, tmp_path / "t", 0, resume=False, max_train_tokens=500, bleu_sentences=0)
    assert 500 <= r["tokens"] < 500 + 300  # stops at the first step past the budget (<= 300 tokens a batch)
    assert 1 < r["step"] < 10
    assert last_state(tmp_path / "t")["train_state"]["tokens"] == r["tokens"]
    # Steps and tokens: whichever comes first.
    r2 = run_train(prepared, tmp_path / "t2", 2, resume=False, max_train_tokens=10**6, bleu_sentences=0)
    assert r2["step"] == 2


@pytest.mark.parametrize("tune, frozen", [("emb_enc", ("decoder",)), ("emb", ("encoder", "decoder"))])
def test_adapt_tunes_only_selected_parts(
    tiny_checkpoint: Path, prepared: Path, tmp_path: Path, tune: str, frozen: tuple[str, ...]
) -> None:
    cfg = adapt_config(
        tiny_checkpoint, prepared, tmp_path / tune, tune=tune, max_steps=2, validate_every=0,
        bleu_sentences=0, select_metric="loss", lr=1e-2, warmup_steps=1,
    )
    result = adapt(cfg, log=quiet, progress=False, resume=False)
    assert result["step"] == 2
    before, _ = load_bundle(tiny_checkpoint)
    after, _ = load_bundle(result["last"])
    assert after.languages() == ["de", "es", "fr", "ro"]
    g0, g1 = before.model.parameter_groups(), after.model.parameter_groups()
    for name in ("encoder", "decoder"):
        same = all(torch.equal(p, q) for p, q in zip(g0[name], g1[name]))
        assert same == (name in frozen), name
    # Existing languages' tables are untouched by another language's training.
    for lang in ("de", "es", "fr"):
        assert torch.equal(before.model.src_embed.tables[lang].weight, after.model.src_embed.tables[lang].weight)


def test_adapt_trains_on_the_dictionary_word_pairs_too(tiny_checkpoint: Path, prepared: Path, tmp_path: Path) -> None:
    """`dictionary_training`: each pair of the language's dictionary joins the
    adapt set as a one-word training pair, that many times; 0 leaves it alone."""
    from mtmeta.adaptation import load_adapt_texts, with_dictionary

    words = tmp_path / "ro-en.txt"
    words.write_text("casă\thouse\nCâine dog\ncasă\thouse\nbad line with three\n", encoding="utf-8")
    cfg = adapt_config(tiny_checkpoint, prepared, tmp_path / "a", dictionary=str(words), dictionary_training=2,
                       max_steps=1, validate_every=0, bleu_sentences=0, select_metric="loss")
    train_text, _ = load_adapt_texts(cfg)
    more = with_dictionary(train_text, cfg, log=quiet)
    assert more.src[: len(train_text)] == train_text.src and more.tgt[: len(train_text)] == train_text.tgt
    assert list(zip(more.src, more.tgt))[len(train_text):] == [("casă", "house"), ("câine", "dog")] * 2
    assert with_dictionary(train_text, dataclasses.replace(cfg, dictionary_training=0), log=quiet) is train_text
    result = adapt(cfg, log=quiet, progress=False, resume=False)
    assert result["added"]["dictionary_training_pairs"] == 4
    assert adapt(dataclasses.replace(cfg, dictionary="none", output=str(tmp_path / "b")), log=quiet, progress=False,
                 resume=False)["added"]["dictionary_training_pairs"] == 0


def test_ctrl_c_stops_at_the_step_boundary_and_resumes_exactly(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    """A real SIGINT arriving mid-step: the step finishes, last.pt is that step
    boundary, and the resumed run equals one never interrupted."""
    import os

    straight = run_train(prepared, tmp_path / "a", 6, resume=False, save_every=2)
    original = SupervisedStrategy.train_step

    def step_with_ctrl_c(self, engine):
        if engine.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # lands before this step's forward/backward
        return original(self, engine)

    monkeypatch.setattr(SupervisedStrategy, "train_step", step_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_train(prepared, tmp_path / "b", 6, resume=False, save_every=2)
    assert last_state(tmp_path / "b")["train_state"]["step"] == 3
    monkeypatch.undo()
    resumed = run_train(prepared, tmp_path / "b", 6, resume=True, init_seed=7, save_every=2)
    assert resumed["step"] == straight["step"] == 6 and resumed["tokens"] == straight["tokens"]
    assert states_equal(last_state(tmp_path / "a")["model"], last_state(tmp_path / "b")["model"])


def test_second_ctrl_c_aborts_without_saving(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    import os

    original = SupervisedStrategy.train_step

    def step_with_two_ctrl_c(self, engine):
        if engine.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, engine)

    monkeypatch.setattr(SupervisedStrategy, "train_step", step_with_two_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_train(prepared, tmp_path / "b", 6, resume=False, save_every=2)
    assert last_state(tmp_path / "b")["train_state"]["step"] == 2  # the last boundary saved, not the aborted step


def test_ctrl_c_during_a_meta_step_saves_theta_not_theta_prime(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    import os

    from mtmeta.strategies.meta import MetaStrategy

    meta = {"strategy": "metanmt", "save_every": 2, "bleu_sentences": 0}
    run_train(prepared, tmp_path / "a", 4, resume=False, **meta)
    original = MetaStrategy._simulate

    def simulate_then_ctrl_c(self, *args, **kw):
        out = original(self, *args, **kw)  # theta' is in the model now
        if not getattr(self, "_interrupted", False):
            self._interrupted = True
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(MetaStrategy, "_simulate", simulate_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_train(prepared, tmp_path / "b", 4, resume=False, **meta)
    assert last_state(tmp_path / "b")["train_state"]["step"] == 1
    monkeypatch.undo()
    run_train(prepared, tmp_path / "b", 4, resume=True, init_seed=7, **meta)
    assert states_equal(last_state(tmp_path / "a")["model"], last_state(tmp_path / "b")["model"])


def test_token_schedule_gives_the_same_lr_at_the_same_tokens() -> None:
    """With warmup_tokens the learning rate depends on tokens processed, not on
    updates: a strategy spending twice the tokens per update is at the same
    point of the curve after the same tokens."""
    from types import SimpleNamespace

    from mtmeta.config import TrainConfig
    from mtmeta.engine import Engine

    settings = TrainConfig(warmup_tokens=1000, warmup_steps=7)
    multitask = SimpleNamespace(settings=settings, tokens=3000, step=30)
    metanmt = SimpleNamespace(settings=settings, tokens=3000, step=15)
    f = Engine.lr_factor
    assert f(multitask, 100) == f(metanmt, 100) == pytest.approx((1000 / 3100) ** 0.5)
    assert f(SimpleNamespace(settings=settings, tokens=0, step=0), 250) == pytest.approx(0.25)  # warming up
    steps = TrainConfig(warmup_steps=4)
    assert f(SimpleNamespace(settings=steps, tokens=10**6, step=1), 100) == pytest.approx(0.5)  # by updates


def test_one_settings_object_reaches_the_engine() -> None:
    """The engine is handed the run's config itself: TrainConfig and
    AdaptConfig both provide every setting the engine reads, so none falls
    back to a default of the engine's own."""
    import typing

    from mtmeta.config import AdaptConfig, TrainConfig
    from mtmeta.engine import EngineSettings

    needed = typing.get_type_hints(EngineSettings)
    assert len(needed) >= 14
    for cfg in (TrainConfig(lr=1e-3, max_steps=7), AdaptConfig(lr=2e-3, max_steps=9)):
        for name, tp in needed.items():
            value = getattr(cfg, name)  # AttributeError: a setting the config lacks
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (type(cfg).__name__, name)
    assert AdaptConfig(lr=2e-3).lr == 2e-3 and AdaptConfig().warmup_tokens == 0


def test_snapshots_every_n_tokens_are_weights_only_and_loadable(prepared: Path, tmp_path: Path) -> None:
    r = run_train(prepared, tmp_path / "s", 6, resume=False, bleu_sentences=0, snapshot_tokens=400)
    snaps = sorted((tmp_path / "s" / "snapshots").glob("tokens-*.pt"))
    assert len(snaps) == r["tokens"] // 400 >= 2
    state = read_checkpoint(snaps[0])
    assert "train_state" not in state and 400 <= state["snapshot"]["tokens"] < 800
    bundle, _ = load_bundle(snaps[-1])
    assert bundle.languages() == ["de", "es", "fr"]


def test_tensorboard_scalars_against_tokens(prepared: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = run_train(prepared, tmp_path / "tb", 4, resume=False, bleu_sentences=0, log_every=2, validate_every=2)
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/target_tokens_per_s", "valid/valid_nll"} <= tags
    nll = acc.Scalars("valid/valid_nll")
    assert [e.step for e in nll][-1] == r["tokens"] and len(nll) == 3  # steps 0, 2, 4
    assert len(acc.Scalars("train/loss")) == 2


def test_tensorboard_on_a_full_disk_stops_with_one_line_and_training_goes_on(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    import errno

    from tensorboard.summary.writer import record_writer

    def full_disk(self, data):  # the event file's write fails as on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", full_disk)
    lines: list[str] = []
    torch.manual_seed(0)
    cfg = train_config(prepared, tmp_path / "full", max_steps=6, validate_every=2, bleu_sentences=0, max_tokens=300, log_every=1)
    r = train(cfg, log=lines.append, progress=False, resume=False)
    assert r["step"] == 6 and (tmp_path / "full" / "last.pt").is_file()
    stopped = [line for line in lines if line.startswith("tensorboard: stopped writing")]
    assert len(stopped) == 1 and "disk full" in stopped[0] and "train_log.jsonl" in stopped[0]
    log = [json.loads(line) for line in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert sum("loss" in rec for rec in log) == 6  # the jsonl log has every record
    assert "Traceback" not in capfd.readouterr().err  # no thread traceback from TensorBoard's writer
