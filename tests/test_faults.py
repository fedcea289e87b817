"""Faults and bad input (issue 14, items 2, 4, 7, 8, 10): a full disk, two
runs into one folder, a torn log line, bad bytes on stdin, and text that the
three readers (prepare, adapt, translate) used to read three ways. Each test
failed on the code before its fix."""
from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtmeta import safe_io
from mtmeta.cli import main

from conftest import MAX_TOKENS

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")


def one_error_line(err: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("mtmeta: error: "), err
    return lines[0]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_args(tmp_path: Path, prepared: Path, out: Path) -> list[str]:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"bleu_sentences": 0, "model": "tiny", "warmup_steps": 2, "log_every": 1}}))
    return ["train", "--config", str(cfg), "--data", str(prepared), "--output", str(out),
            "--max-tokens", str(MAX_TOKENS), "--validate-every", "2", "--langs", "de", "fr", "--threads", "1"]


# ---------------------------------------------------------------- 2. full disk


@needs_dev_full
def test_translate_to_full_stdout_fails(adapted_checkpoint: Path, tmp_path: Path) -> None:
    """`mtmeta translate > file` on a full disk: exit 2 and "disk full", not exit 0."""
    src = tmp_path / "in.ro"
    src.write_text("Bună ziua.\nUnde este gara?\n" * 20, encoding="utf-8")
    with open(FULL, "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "mtmeta.cli", "-q", "translate", "--checkpoint", str(adapted_checkpoint),
             "--lang", "ro", "--input", str(src), "--beam", "1"],
            stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO, timeout=300,
        )
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert "stdout" in line and "disk full" in line


@needs_dev_full
def test_short_write_to_stdout_is_an_error(monkeypatch, tmp_path: Path) -> None:
    """A disk that fills mid-way: the first write is short, the next fails. Python's
    buffered stdout dropped the rest without a word (exit 0 with a cut file)."""
    real_write, calls = os.write, []

    def short_write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    with open(tmp_path / "out.en", "w", encoding="utf-8") as f:
        monkeypatch.setattr(sys, "stdout", f)
        monkeypatch.setattr(os, "write", short_write)
        with pytest.raises(safe_io.OutputError, match="stdout: write failed \\(disk full\\)"):
            safe_io.write_stdout("x" * 10_000)
    assert calls == [10_000, 9_900]


def test_translate_output_file_on_full_disk(capsys, adapted_checkpoint: Path, tmp_path: Path) -> None:
    """--output: the write goes to a temp file; when it fails the old file is untouched."""
    src = tmp_path / "in.ro"
    src.write_text("Bună ziua.\n", encoding="utf-8")
    out = tmp_path / "out.en"
    out.write_text("previous translations\n", encoding="utf-8")
    (tmp_path / "out.en.tmp").symlink_to(FULL)  # the temp file's writes land on a full device
    code, _, err = run(capsys, "translate", "--checkpoint", str(adapted_checkpoint), "--lang", "ro",
                       "--input", str(src), "--output", str(out), "--beam", "1")
    assert code == 2
    line = one_error_line(err)
    assert "disk full" in line and "out.en" in line
    assert out.read_text(encoding="utf-8") == "previous translations\n"
    assert not os.path.lexists(tmp_path / "out.en.tmp")


@needs_dev_full
def test_checkpoint_on_full_disk_is_one_line_and_keeps_the_previous(capsys, prepared: Path, tmp_path: Path) -> None:
    """torch.save on a full disk said `unexpected pos 64 vs 0` in a traceback."""
    out = tmp_path / "run"
    args = train_args(tmp_path, prepared, out)
    code, _, err = run(capsys, *args, "--max-steps", "2")
    assert code == 0, err
    before = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt")}
    for name in before:
        (out / f"{name}.tmp").symlink_to(FULL)
    code, _, err = run(capsys, *args, "--max-steps", "4")
    assert code == 2, err
    line = one_error_line(err)
    assert "disk full" in line and ("last.pt" in line or "best.pt" in line) and "unchanged" in line
    for name, data in before.items():
        assert (out / name).read_bytes() == data
    failed = "best.pt" if "best.pt" in line else "last.pt"
    assert not os.path.lexists(out / f"{failed}.tmp")  # the temp file is removed


def test_atomic_write_on_enospc(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    safe_io.atomic_write_json(path, {"a": 1})

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safe_io, "_fsync_file", no_space)
    with pytest.raises(safe_io.OutputError, match="disk full.*unchanged"):
        safe_io.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert not (tmp_path / "run.json.tmp").exists()


def test_staged_folder_publishes_whole_or_not_at_all(monkeypatch, tmp_path: Path) -> None:
    # A release or export folder: a failure while it is built leaves the earlier one as it
    # was; success replaces it whole; nothing temporary is left either way.
    out = tmp_path / "release"
    out.mkdir()
    (out / "weights.pt").write_text("old", encoding="utf-8")
    with pytest.raises(OSError, match="disk full"):
        with safe_io.staged_folder(out) as tmp:
            (tmp / "weights.pt").write_text("half", encoding="utf-8")
            raise OSError(errno.ENOSPC, "disk full")
    assert [f.name for f in tmp_path.iterdir()] == ["release"] and (out / "weights.pt").read_text(encoding="utf-8") == "old"
    with safe_io.staged_folder(out) as tmp:
        (tmp / "weights.pt").write_text("new", encoding="utf-8")
        assert (out / "weights.pt").read_text(encoding="utf-8") == "old"  # not published before the block ends
    assert [f.name for f in tmp_path.iterdir()] == ["release"] and (out / "weights.pt").read_text(encoding="utf-8") == "new"
    # The swap itself fails after the earlier folder was moved aside: it is put back.
    real_rename = Path.rename

    def failing_rename(self, target):
        if ".tmp-" in self.name:
            raise OSError(errno.EXDEV, "cross-device link")
        return real_rename(self, target)
    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="cross-device"):
        with safe_io.staged_folder(out) as tmp:
            (tmp / "weights.pt").write_text("newer", encoding="utf-8")
    assert [f.name for f in tmp_path.iterdir()] == ["release"] and (out / "weights.pt").read_text(encoding="utf-8") == "new"


def test_run_record_on_enospc(monkeypatch, tmp_path: Path) -> None:
    """Run records (done.json, results.json, forgetting.json) go through write_json."""
    from mtmeta.scoring import write_json

    path = tmp_path / "done.json"
    write_json({"step": 1}, path)
    monkeypatch.setattr(safe_io, "_fsync_file", lambda *_: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(safe_io.OutputError, match="done.json: disk full"):
        write_json({"step": 2}, path)
    assert json.loads(path.read_text()) == {"step": 1} and not (tmp_path / "done.json.tmp").exists()


def test_any_enospc_is_one_line(capsys, monkeypatch) -> None:
    """A write the project does not wrap (numpy, sentencepiece, ...) on a full disk."""
    import mtmeta.cli as cli

    def prepare_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "work/prep.partial/data/de-en/train.npz")

    monkeypatch.setattr(cli, "cmd_prepare", prepare_full)
    code = main(["-q", "prepare", "--output", "x"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "disk full" in line and "train.npz" in line


# ---------------------------------------------------------------- 4. one run per folder

HOLD = (
    "import sys; from mtmeta.safe_io import OutputLock; OutputLock(sys.argv[1]).acquire(); "
    "print('ready', flush=True); sys.stdin.read()"
)


def hold_lock(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "mtmeta-holder"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_train_into_a_locked_folder_is_refused(capsys, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        code, _, err = run(capsys, *train_args(tmp_path, prepared, out), "--max-steps", "2")
        assert code == 2, err
        line = one_error_line(err)
        assert f"pid {holder.pid}" in line and "in use" in line and "mtmeta-holder" in line
        assert not (out / "last.pt").exists() and not (out / "train_log.jsonl").exists()
    finally:
        holder.kill()  # SIGKILL: the lock dies with its process, never stale
        holder.wait()
    code, _, err = run(capsys, *train_args(tmp_path, prepared, out), "--max-steps", "2")
    assert code == 0, err
    assert (out / "last.pt").is_file()


def test_recipe_locks_its_work_folder(capsys, minipack: Path, tmp_path: Path) -> None:
    from test_recipe import recipe

    work = tmp_path / "work"
    holder = hold_lock(work)
    try:
        code, _, err = run(capsys, "recipe", "run", str(recipe(tmp_path, minipack)))
        assert code == 2 and f"pid {holder.pid}" in one_error_line(err)
        assert not (tmp_path / "prepared").exists()  # refused before any work
    finally:
        holder.stdin.close()
        holder.wait()
    # (a comparison grid shares its work folder between processes: test_compare.py)


def test_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    with safe_io.OutputLock(tmp_path / "w"):
        with safe_io.OutputLock(tmp_path / "w"):  # a recipe's own stage writing inside its work folder
            pass


def test_lock_refuses_another_process(tmp_path: Path) -> None:
    with safe_io.OutputLock(tmp_path / "w"):
        r = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path / "w")], env=ENV, cwd=REPO,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "BusyError" in r.stderr and f"pid {os.getpid()}" in r.stderr


# ---------------------------------------------------------------- 7. torn train_log.jsonl


def test_torn_log_line_is_dropped_on_resume(capsys, prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = train_args(tmp_path, prepared, out)
    assert run(capsys, *args, "--max-steps", "2")[0] == 0
    log = out / "train_log.jsonl"
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"step": 3, "tokens": 81')  # killed (or the disk filled) mid-append
    code, _, err = run(capsys, *args, "--max-steps", "4")
    assert code == 0, err
    records = [json.loads(x) for x in log.read_text(encoding="utf-8").split("\n")[:-1]]  # every line is JSON
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["validation"]["step"] for r in records if "validation" in r] == [0, 2, 4]


def test_compare_reads_a_torn_log(tmp_path: Path) -> None:
    from mtmeta.compare import _best_valid_nll

    log = tmp_path / "train_log.jsonl"
    good = [{"validation": {"step": 0, "valid_nll": 5.0}}, {"validation": {"step": 2, "valid_nll": 4.25}}]
    text = "".join(json.dumps(r) + "\n" for r in good)
    log.write_text(text + '{"validation": {"step": 4, "val', encoding="utf-8")  # torn last line
    assert _best_valid_nll(log) == 4.25
    # What older code left: a torn line with the next record appended onto it.
    log.write_text(text + '{"step": 3, "tok' + '{"validation": {"step": 4, "valid_nll": 4.0}}\n', encoding="utf-8")
    assert _best_valid_nll(log) == 4.25


def test_repair_log_drops_steps_to_be_redone(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    records = [{"validation": {"step": 0}}, {"segment": {"step": 0}}, {"step": 1}, {"step": 2},
               {"validation": {"step": 2}}, {"segment": {"step": 2}}, {"step": 3}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 4', encoding="utf-8")
    note = safe_io.repair_log(log, keep_through=2)
    assert "torn" in note and "2 record(s)" in note
    assert [json.loads(x) for x in log.read_text().splitlines()] == records[:5]
    assert safe_io.repair_log(log, keep_through=2) == ""
    safe_io.repair_log(log, keep_through=-1)  # a fresh start: the log starts over
    assert log.read_text() == ""


# ---------------------------------------------------------------- 8. bad bytes on stdin


def test_translate_invalid_utf8_on_stdin(capsys, monkeypatch, tiny_checkpoint: Path) -> None:
    data = b"Guten Tag\nSch\xf6n\n"
    # Like the real stdin: text with surrogateescape, which let bad bytes reach the model.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape"))
    code, out, err = run(capsys, "translate", "--checkpoint", str(tiny_checkpoint), "--lang", "de", "--beam", "1")
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "stdin line 2" in line and "UTF-8" in line


# ---------------------------------------------------------------- 10. one reader


def capture_translator(monkeypatch) -> list[list[str]]:
    import mtmeta.cli as cli

    seen: list[list[str]] = []

    def translator(args, lang):
        def run_lines(lines, progress):
            seen.append(list(lines))
            return [f"T{i}" for i in range(len(lines))]

        return run_lines

    monkeypatch.setattr(cli, "_translator", translator)
    return seen


def test_translate_reads_text_as_prepare_does(capsys, monkeypatch, tmp_path: Path) -> None:
    seen = capture_translator(monkeypatch)
    nul = tmp_path / "nul.de"
    nul.write_bytes("Gu\x00ten  Tag\r\nZweite Zeile\n".encode())
    out = tmp_path / "o.en"
    code, _, err = run(capsys, "translate", "--checkpoint", "x", "--lang", "de", "--input", str(nul), "--output", str(out))
    assert code == 0, err
    assert seen[-1] == ["Guten Tag", "Zweite Zeile"]  # NUL removed and whitespace normalised, as prepare does
    assert "NUL" in err and "line 1" in err
    cr = tmp_path / "mac.de"
    cr.write_bytes(b"eins\rzwei\rdrei\r")
    code, _, err = run(capsys, "translate", "--checkpoint", "x", "--lang", "de", "--input", str(cr), "--output", str(out))
    assert code == 0 and seen[-1] == ["eins", "zwei", "drei"]
    assert "CR-only" in err
    assert out.read_text() == "T0\nT1\nT2\n"


def test_prepare_loader_reads_cr_only_and_nul(capsys, tmp_path: Path) -> None:
    from collections import Counter

    from data_prep.cleaning import CleaningRules, clean_train_text
    from data_prep.sources import load_plain_files

    (tmp_path / "a.de").write_bytes(b"Guten Morgen\rGuten Abend\rGute Nacht\r")
    (tmp_path / "a.en").write_bytes("Good morning\rGood evening\rGood\x00 night\r".encode())
    text = load_plain_files(tmp_path / "a.de", tmp_path / "a.en", "de", "meta-train")
    assert text.src == ["Guten Morgen", "Guten Abend", "Gute Nacht"]
    assert text.tgt == ["Good morning", "Good evening", "Good night"]
    err = capsys.readouterr().err
    assert "a.de: CR-only" in err and "a.en: CR-only" in err and "NUL" in err
    counts = Counter()
    assert len(clean_train_text(text, CleaningRules(), counts)) == 3 and not counts["too_long"]


def test_adapt_files_drop_empty_pairs(capsys, tmp_path: Path) -> None:
    from mtmeta import config as C
    from mtmeta.adaptation import load_adapt_texts

    (tmp_path / "t.ro").write_text("Bună ziua.\n\nMulțumesc.\nDa.\n", encoding="utf-8")
    (tmp_path / "t.en").write_text("Good day.\nNothing.\nThank you.\n \n", encoding="utf-8")
    (tmp_path / "v.ro").write_text("Unde?\n", encoding="utf-8")
    (tmp_path / "v.en").write_text("Where?\n", encoding="utf-8")
    cfg = C.AdaptConfig(lang="ro", train_files=[str(tmp_path / "t.ro"), str(tmp_path / "t.en")],
                        valid_files=[str(tmp_path / "v.ro"), str(tmp_path / "v.en")])
    train, valid = load_adapt_texts(cfg)
    assert train.src == ["Bună ziua.", "Mulțumesc."] and train.tgt == ["Good day.", "Thank you."]
    assert len(valid) == 1
    err = capsys.readouterr().err
    assert "dropped 2 line pair(s) with an empty side (line 2, 4)" in err
