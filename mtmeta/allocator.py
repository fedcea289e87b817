"""The memory allocator of the long commands: jemalloc where the machine has it.

Why: a training step frees and re-allocates the same large buffers every
time. glibc hands freed blocks above its mmap threshold back to the kernel,
so each step faults hundreds of thousands of zeroed pages in again (~14% of
a CPU pre-training run was kernel time). jemalloc told not to purge keeps
them: 1.25-1.6x faster CPU training with bit-identical losses and weights
(`results/speed/README.md`, `benchmarks/bench_allocator.py`).

`lg_extent_max_active_fit:20` is not optional: without it jemalloc served
requests from ever larger free extents after the first validation and a
run's memory grew from 5 to 21 GB until the kernel killed it; with it the
same run stays flat at ~3.6 GB (glibc: 6-8 GB).

An allocator is chosen when a process starts (LD_PRELOAD), so a long
command re-executes itself once with the library preloaded: same process
id, same arguments. `MTMETA_ALLOCATOR` decides: `auto` (default: jemalloc
when found, else the system's), `system` (never re-execute), `jemalloc`
(required: a clear error when the library is missing).
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from .errors import ConfigError

ENV_CHOICE = "MTMETA_ALLOCATOR"
# Set in the re-executed process, so that it never re-executes again (also when
# the preload failed: the dynamic loader then warns and carries on with glibc).
ENV_DONE = "MTMETA_ALLOCATOR_REEXEC"
CHOICES = ("auto", "system", "jemalloc")
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,lg_extent_max_active_fit:20"
# Debian/Ubuntu (libjemalloc2), Fedora/RHEL, Alpine, Homebrew-on-Linux and /usr/local builds.
LIBRARY_PATTERNS = (
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
    "/home/linuxbrew/.linuxbrew/lib/libjemalloc.so.2",
)


def find_jemalloc(patterns: tuple[str, ...] = LIBRARY_PATTERNS) -> str | None:
    """The path of a jemalloc shared library on this machine, or None."""
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return path
    return None


def active(maps: Path = Path("/proc/self/maps")) -> str:
    """'jemalloc' when the running process has it mapped, else 'system'."""
    try:
        text = maps.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in text else "system"


def reexec_environment(environ: dict[str, str], library: str | None, platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to re-execute under, or None to run as we are.
    Raises ConfigError for a bad MTMETA_ALLOCATOR or a required library that is missing."""
    choice = environ.get(ENV_CHOICE, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{ENV_CHOICE}={environ[ENV_CHOICE]!r} unknown ({', '.join(CHOICES)})")
    if choice == "system" or environ.get(ENV_DONE):
        return None
    preload = environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload:  # the user preloaded it already
        return None
    if not platform.startswith("linux") or library is None:
        if choice == "jemalloc":
            where = "this system is not Linux" if not platform.startswith("linux") else (
                "no libjemalloc.so.2 found (Debian/Ubuntu: apt-get install libjemalloc2)")
            raise ConfigError(f"{ENV_CHOICE}=jemalloc: {where}; or set {ENV_CHOICE}=system")
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)  # a user's own jemalloc settings win
    env[ENV_DONE] = "1"
    return env


def reexec_with_jemalloc() -> None:
    """Replace this process by itself (same script or module, same arguments)
    under jemalloc when MTMETA_ALLOCATOR and the machine say so; return
    (doing nothing) otherwise."""
    env = reexec_environment(dict(os.environ), find_jemalloc())
    if env is None:
        return
    script = sys.argv[0]
    # The `mtmeta` console script runs as itself (locks and logs keep naming it); `python -m mtmeta.cli` as a module.
    entry = [script] if os.path.isfile(script) and not script.endswith(".py") else ["-m", "mtmeta.cli"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *entry, *sys.argv[1:]], env)
