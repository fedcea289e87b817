"""Reading text and writing outputs without surprises.

- Every output is written to a temporary file, flushed, fsynced and renamed
  (`atomic_write_text`, `atomic_write_json`, `atomic_save`): a full disk or
  a kill leaves the previous file as it was, and a failed write is one
  `OutputError` line naming the file ("disk full" where it is).
- stdout is written and flushed with checks (`write_stdout`,
  `flush_stdout`): a short write is an error, never exit 0 with half the
  output.
- JSONL logs: a torn last line (a kill or a full disk mid-append) is
  dropped before appending (`drop_torn_tail`) and tolerated when reading
  (`read_jsonl`).
- `read_text_lines` is the one way text files and stdin are read (prepare's
  loaders, adapt's files, translate's input): strict UTF-8 with the line
  number of a bad byte, "\\n" and "\\r\\n" line ends, a CR-only file split on
  CR, NUL characters removed; whatever it changes is said on stderr.
- `OutputLock`: an exclusive lock on an output folder, so two runs cannot
  write into one folder at once.

This module imports nothing of the project except mtmeta.errors, so that
data_prep can use it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, DataError, MtmetaError

LOCK_NAME = ".mtmeta.lock"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class OutputError(MtmetaError):
    """An output could not be written (disk full, read-only, ...)."""


class BusyError(MtmetaError):
    """An output folder is locked by another run."""


def sha256_file(path: str | Path) -> str:
    """A file's SHA-256, read in 4 MiB chunks (checkpoints, released weights, hypotheses)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def os_reason(exc: BaseException) -> str:
    """A few words for why a write failed."""
    if isinstance(exc, OSError):
        if exc.errno in DISK_FULL:
            return "disk full"
        if exc.errno == errno.EROFS:
            return "read-only file system"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if exc.errno == errno.EPIPE:
            return "broken pipe (the reader went away)"
        return exc.strerror or str(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def notify_stderr(msg: str) -> None:
    print(f"mtmeta: warning: {msg}", file=sys.stderr, flush=True)


# --- atomic files ---------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_replaceable_folder(out: Path, force: bool, marker: str, what: str) -> None:
    """An --output folder a command will fill and may replace: new, empty, or
    an earlier `what` (it holds `marker`) with force. Anything else is refused,
    so that replacing it can never delete a user's own folder."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        return
    if not out.is_dir():
        raise ConfigError(f"--output {out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not (out / marker).is_file():
        raise ConfigError(f"--output {out}: a non-empty folder that is not an mtmeta {what}; choose another --output")
    if not force:
        raise ConfigError(f"--output {out}: holds an earlier {what}; add --force to replace it")


@contextlib.contextmanager
def staged_folder(out: Path):
    """Build a folder beside `out` and publish it whole. Yields an empty
    temporary folder; when the block ends, its files are fsynced and it
    takes the place of `out` (an earlier `out` is renamed away first, put
    back if the swap fails, and deleted after); on any failure the temporary
    folder is removed and `out` is left as it was. Check first that `out`
    may be replaced (check_replaceable_folder)."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for f in tmp.iterdir():  # on disk before the rename publishes the folder
            if f.is_file():
                _fsync_file(f)
        if out.exists():
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)
                raise
        else:
            tmp.rename(out)
        _fsync_file(out.parent)  # the renames themselves
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)  # published: a leftover old copy is not a failure


def atomic_save(path: str | os.PathLike, write: Callable[[Path], None], what: str = "file", needed_bytes: int = 0) -> None:
    """Write `path` by calling `write(tmp)` on `<path>.tmp`, fsync it and
    rename it over `path`. Any failure removes the temporary file, leaves
    `path` as it was and raises one OutputError line naming the file.
    `needed_bytes`: about how large the file gets, to tell a full disk from
    a writer's cryptic error (torch.save says only "unexpected pos")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {what} {path}: cannot create its folder ({os_reason(e)})") from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        reason = os_reason(e)
        if not (isinstance(e, OSError) and e.errno in DISK_FULL):
            free = _free_bytes(path.parent)
            if free is not None and (free < max(needed_bytes, 1 << 20)):
                reason = f"disk full: {_mb(free)} free, needs about {_mb(needed_bytes)}"
            elif not isinstance(e, OSError):
                reason = f"write failed, disk full? ({reason}; {_mb(free) if free is not None else '?'} free)"
        keep = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
        raise OutputError(f"cannot write {what} {path}: {reason}; {keep}") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str = "file") -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()

    atomic_save(path, write, what, needed_bytes=len(data))


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "file") -> None:
    atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path: str | os.PathLike, obj: Any, what: str = "file") -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n", what)


# --- stdout -------------------------------------------------------------------------


def _silence_stdout() -> None:
    """After a failed write, send what is left in stdout's buffer to /dev/null
    so the interpreter's own flush at exit does not fail a second time."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def _stdout_error(e: OSError) -> OutputError:
    _silence_stdout()
    return OutputError(f"stdout: write failed ({os_reason(e)}); the output is incomplete")


def write_stdout(text: str) -> None:
    """Write to stdout, checked: a short write raises OutputError. Python's
    buffered stdout accepts a short write to a full disk without a word (the
    rest is dropped and the exit code stays 0), so the bytes go to the file
    descriptor directly, in a loop that checks every count, and a regular
    file is fsynced."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a real file (tests' capture)
        fd = None
    except OSError as e:
        raise _stdout_error(e) from None
    if fd is None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as e:
            raise _stdout_error(e) from None
        return
    data = memoryview(text.encode(getattr(sys.stdout, "encoding", None) or "utf-8", getattr(sys.stdout, "errors", None) or "strict"))
    try:
        while data:
            n = os.write(fd, data)
            if n <= 0:
                raise OSError(errno.EIO, "write returned 0")
            data = data[n:]
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    except OSError as e:
        raise _stdout_error(e) from None


def flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as e:
        raise _stdout_error(e) from None
    except ValueError:  # stdout closed
        pass


# --- JSONL ---------------------------------------------------------------------------


def drop_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line that lacks its newline (a kill or a full disk
    mid-append), so the next append starts a line of its own. Returns the
    number of bytes dropped."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Find the last newline (read backwards in blocks).
        end, keep = size, 0
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            block = f.read(end - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def append_jsonl(path: str | os.PathLike, record: dict, fsync: bool = False) -> None:
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(f"cannot append to {path}: {os_reason(e)}") from None


def read_jsonl(path: str | os.PathLike, skip_bad: bool = False) -> list[dict]:
    """Records of a JSONL file. A torn last line is ignored; a bad line
    elsewhere is a DataError naming it, or skipped with `skip_bad`."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")  # not splitlines(): U+2028
    while lines and not lines[-1]:
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 or skip_bad:
                continue
            raise DataError(f"{path}: line {i + 1} is not JSON; fix or remove it") from None
    return out


def record_step(record: dict) -> int | None:
    """The training step a train_log.jsonl record belongs to."""
    for key in ("validation", "segment"):
        if isinstance(record.get(key), dict):
            record = record[key]
            break
    step = record.get("step")
    return step if isinstance(step, int) else None


def repair_log(path: str | os.PathLike, keep_through: int | None) -> str:
    """Before a run appends to its train_log.jsonl: drop a torn last line,
    and records of steps after `keep_through` (the step the run starts
    from; -1 for a fresh start), which the run will write again. Returns a
    note for the user, or "" when nothing changed."""
    path = Path(path)
    if not path.is_file():
        return ""
    torn = drop_torn_tail(path)
    notes = [f"dropped a torn last line ({torn} bytes; a run was killed or the disk filled while writing it)"] if torn else []
    if keep_through is not None:
        raw = path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]
        kept, dropped = [], 0
        for line in raw:
            try:
                record = json.loads(line)
                step = record_step(record)
                # a run segment's record (where a start or resume ran) at the step it began:
                # one beginning at the resume step made only records that are written again
                segment = isinstance(record.get("segment"), dict)
            except (json.JSONDecodeError, AttributeError):
                step, segment = None, False
            if step is not None and (step >= keep_through if segment else step > keep_through):
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            atomic_write_text(path, "".join(x + "\n" for x in kept), "log")
            since = "of the earlier run (fresh start)" if keep_through < 0 else f"after step {keep_through} (written again from there)"
            notes.append(f"dropped {dropped} record(s) {since}")
    return f"{path}: " + "; ".join(notes) if notes else ""


# --- reading text --------------------------------------------------------------------


def _line_list(numbers: list[int], most: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:most])
    return shown + (f", ... ({len(numbers)} lines)" if len(numbers) > most else "")


def read_text_lines(
    source: str | os.PathLike | bytes,
    where: str | None = None,
    notify: Callable[[str], None] | None = notify_stderr,
) -> list[str]:
    """Lines of a UTF-8 text file (a path) or of bytes already read (stdin).

    - strict UTF-8: a bad byte is a DataError naming the line;
    - lines end at "\\n" (a "\\r" before it is dropped); never at U+2028,
      U+0085 etc. inside a sentence (str.splitlines() would misalign two
      sides); a file with CR-only line ends (no "\\n") is split on "\\r";
    - NUL characters are removed;
    - an empty file is a DataError.
    What was changed is said through `notify` (stderr by default).
    """
    if isinstance(source, bytes):
        data, where = source, where or "stdin"
    else:
        p = Path(source)
        where = where or str(p)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{p}: file not found") from None
        except IsADirectoryError:
            raise DataError(f"{p}: is a folder, not a text file") from None
        except OSError as exc:
            raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data.count(b"\n", 0, exc.start) + 1
        if b"\n" not in data and b"\r" in data:
            line_no = data.count(b"\r", 0, exc.start) + 1
        raise DataError(
            f"{where} line {line_no}: not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    if not text:
        raise DataError(f"{where} is empty (0 lines)")
    notes = []
    if "\n" not in text and "\r" in text.rstrip("\r"):
        lines = text.split("\r")
        if lines[-1] == "":
            lines.pop()
        notes.append(f"CR-only line ends (old Mac format): read as {len(lines)} lines split at CR")
    else:
        lines = text.split("\n")
        if lines[-1] == "":  # terminator of the last line, not an extra empty line
            lines.pop()
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if "\x00" in text:
        nul = [i + 1 for i, ln in enumerate(lines) if "\x00" in ln]
        lines = [ln.replace("\x00", "") for ln in lines]
        notes.append(f"removed NUL characters from line {_line_list(nul)}")
    if notes and notify is not None:
        notify(f"{where}: " + "; ".join(notes))
    return lines


# --- locks ---------------------------------------------------------------------------

_held: dict[str, list] = {}  # realpath -> [file object, depth]: re-entrant within one process


class OutputLock:
    """An exclusive lock on `folder` (fcntl.flock on folder/.mtmeta.lock)
    for as long as one run writes into it. The kernel drops the lock when
    the process ends however it ends, so a lock is never stale; the file
    holds the holder's pid, command and start time for the message a second
    run gets. Re-entrant within one process (a recipe's own stages)."""

    def __init__(self, folder: str | os.PathLike, what: str = "output folder"):
        self.folder = Path(folder)
        self.what = what
        self._key: str | None = None

    def acquire(self) -> "OutputLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create {self.what} {self.folder}: {os_reason(e)}") from None
        key = os.path.realpath(self.folder)
        if key in _held:
            _held[key][1] += 1
            self._key = key
            return self
        path = self.folder / LOCK_NAME
        try:
            f = open(path, "a+", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot lock {self.what} {self.folder}: {os_reason(e)}") from None
        try:
            # A few tries: OutputLock.busy() in another process holds a lock for microseconds.
            for attempt in range(5):
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if attempt == 4 or e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    time.sleep(0.02)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                f.close()
                raise OutputError(f"cannot lock {self.what} {self.folder}: {os_reason(e)}") from None
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise BusyError(
                f"{self.what} {self.folder} is in use by another run ({holder or 'holder unknown'}); "
                "wait for it to finish, or choose another folder"
            ) from None
        info = (
            f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}, "
            f"command: {' '.join(sys.argv)}"
        ).replace("\n", " ")
        try:
            f.seek(0)
            f.truncate()
            f.write(info + "\n")
            f.flush()
        except OSError:
            pass  # the lock holds without the note
        _held[key] = [f, 1]
        self._key = key
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None or key not in _held:
            return
        _held[key][1] -= 1
        if _held[key][1] == 0:
            f = _held.pop(key)[0]
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            finally:
                f.close()

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @staticmethod
    def busy(folder: str | os.PathLike) -> bool:
        """Whether another process holds `folder`'s lock now (a probe: the
        answer can change right after)."""
        path = Path(folder) / LOCK_NAME
        if not path.is_file() or os.path.realpath(folder) in _held:
            return False
        try:
            with open(path, "a+", encoding="utf-8") as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)  # held for microseconds: acquire() retries
        except OSError:
            return False
        return False


@contextlib.contextmanager
def waiting_lock(path: str | os.PathLike):
    """An exclusive lock on the file `path` for a short critical section,
    waiting for it when another process holds it (unlike OutputLock, which
    refuses). Not re-entrant: never nest two on one path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


__all__ = [
    "BusyError", "OutputError", "OutputLock", "append_jsonl", "atomic_save", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "drop_torn_tail", "flush_stdout", "notify_stderr", "os_reason", "read_jsonl", "read_text_lines",
    "record_step", "repair_log", "waiting_lock", "write_stdout", "check_replaceable_folder",
]
