"""Build-on-first-use of the package's native (C++) kernels, without torch.

Both the training kernels (``coolchic.model.native``) and the decoder's latent kernel
(``coolchic.entropy.native``) are C++ sources shipped with the package. Each is compiled
the first time it is needed with the system C++ compiler (``$CXX``, else c++, g++,
clang++), into a shared object named by a hash of the source, the compiler, the flags and
the CPU (``-march=native`` code may not run on another CPU), kept in the user's cache
(``$XDG_CACHE_HOME/coolchic``, else ``~/.cache/coolchic``) or, when that is not writable,
a per-user temporary folder. A failure is never fatal: `load` returns the reason as a
string and the caller falls back to its numpy or torch code.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


def compiler() -> str | None:
    """Path of the C++ compiler to use, or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def cache_dirs() -> list[Path]:
    """Where built libraries are kept: the user's cache, else a per-user temporary folder
    (a read-only home must not cost the speed)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return [Path(base) / "coolchic", Path(tempfile.gettempdir()) / f"coolchic-{user}"]


def cpu_id() -> str:
    """What -march=native depends on: a library built for one CPU may not run on another."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({x for x in lines if x.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _build(cxx: str, source: Path, flags: Sequence[str], out: Path) -> None:
    """Compile `source` with `flags`, then link it (without them: -ffast-math at link time
    would add a start-up routine that turns on flush-to-zero for the whole process) into
    `out`, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = Path(tmp) / f"{source.stem}.o", Path(tmp) / out.name
        run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=300)
        run([cxx, *flags, "-c", str(source), "-o", str(obj)])
        run([cxx, "-shared", "-pthread", str(obj), "-o", str(lib)])
        os.replace(lib, out)


def load(source: Path, *, flag_sets: Sequence[Sequence[str]], version_symbol: str,
         version: int) -> ctypes.CDLL | str:
    """Build (once) and load `source`; the flag sets are tried in order.

    Returns:
        The loaded library, whose ``version_symbol()`` returned `version`; or a one-line
        reason why no library could be had.
    """
    if os.environ.get("COOLCHIC_NATIVE") == "0":
        return "disabled by COOLCHIC_NATIVE=0"
    cxx = compiler()
    if cxx is None:
        return "no C++ compiler found (set CXX)"
    try:
        about = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return f"{cxx} --version failed: {error}"
    text = source.read_text()
    errors = []
    for flags in flag_sets:
        key = hashlib.sha256("\0".join((text, cxx, about, *flags, cpu_id())).encode()).hexdigest()[:16]
        for folder in cache_dirs():
            path = folder / f"{source.stem}-{key}.so"
            try:
                if not path.exists():
                    _build(cxx, source, flags, path)
                cdll = ctypes.CDLL(str(path))
                if getattr(cdll, version_symbol)() != version:
                    return f"{path}: kernels version mismatch"
                return cdll
            except subprocess.CalledProcessError as error:  # these flags fail: try the next
                errors.append(f"{' '.join(flags)}: {error.stderr.strip()[-500:]}")
                break
            except (OSError, subprocess.SubprocessError) as error:  # this folder fails
                errors.append(f"{' '.join(flags)} in {folder}: {error}")
    return f"building {source.name} failed: " + " | ".join(errors)
