"""The package's native (C++) kernels: built at install time, chosen for this CPU at run
time, loaded with ctypes (no torch, no Python headers).

Two C++ sources ship with the package: the training kernels (``coolchic/model/kernels.cpp``,
``coolchic.model.native``) and the decoder (``coolchic/decoder/decoder_kernels.cpp``,
``coolchic.decoder.native``). ``pip install`` compiles each into ``coolchic/_native/`` in
several *variants*: a portable baseline for the architecture, and on x86-64 an AVX2 + FMA
one (``x86-64-v3``) that is loaded only where the CPU has those instructions. Never
``-march=native``: an installed library must run on every machine its wheel reaches.

Each library carries the SHA-256 of its source (``coolchic_source_sha()``); a library
whose source has changed since it was built (an editable install after an edit) is not
loaded. With ``COOLCHIC_NATIVE=build`` (a development option) a missing or stale library
is compiled on first use into a private cache (``$XDG_CACHE_HOME/coolchic``, else
``~/.cache/coolchic``; mode 0700 and owned by the user, else refused). With
``COOLCHIC_NATIVE=0`` nothing native is loaded. A failure is never fatal: `load` returns
the reason as a string and the caller runs its numpy or torch code.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INSTALL_DIR = Path(__file__).with_name("_native")  # where `pip install` puts the libraries
PACKAGE = Path(__file__).parent
# every native source, with its compile flags (CPU variants add theirs): the training
# kernels are float code that may be reassociated; the decoder must see the IEEE result
# of each operation (floor and clips follow), so neither -ffast-math nor fused multiply-adds
SOURCES = {
    "model/kernels.cpp": ("-O3", "-std=c++17", "-fPIC", "-ffast-math", "-pthread"),
    "decoder/decoder_kernels.cpp": ("-O3", "-std=c++17", "-fPIC", "-ffp-contract=off"),
}
SHA_SYMBOL = "coolchic_source_sha"  # extern "C" const char* of each source; see `source_sha`


@dataclass(frozen=True)
class Variant:
    """One build of a source for a class of CPUs."""

    name: str  # part of the library's file name
    flags: tuple[str, ...]  # added to the source's own compile flags
    cpu_flags: frozenset[str]  # /proc/cpuinfo flags the code needs (empty: any CPU of the arch)


BASELINE = Variant("baseline", (), frozenset())
# x86-64-v3 (Haswell, Zen 1 and later): AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE
X86_64_V3 = Variant("x86_64_v3", ("-march=x86-64-v3",),
                    frozenset({"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "abm", "movbe", "xsave"}))


def variants() -> tuple[Variant, ...]:
    """The variants built for this machine's architecture, most specific first."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        return (X86_64_V3, BASELINE)
    return (BASELINE,)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere, which picks the baseline)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def runnable_variants() -> list[Variant]:
    """The variants this CPU can run, most specific first."""
    have = cpu_flags()
    return [v for v in variants() if v.cpu_flags <= have]


def source_sha(source: Path) -> str:
    """What a library built from `source` reports from ``coolchic_source_sha()``."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def library_name(source: Path, variant: Variant) -> str:
    """The file name of `source`'s library in `variant`, as installed in the package."""
    return f"{source.stem}_{variant.name}.so"


def cache_name(source: Path, variant: Variant) -> str:
    """The file name of `source`'s library in the development cache: it names the source's
    SHA, so that a library built from an edited source never takes the path of a stale one
    (the dynamic loader hands out a library already loaded under the same path)."""
    return f"{source.stem}_{variant.name}_{source_sha(source)[:16]}.so"


def compiler() -> str | None:
    """Path of the C++ compiler to use ($CXX, else c++, g++, clang++), or None."""
    import shutil  # here and in `build`: every decode loads this module, few ever build

    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def build(source: Path, flags: Sequence[str], variant: Variant, out: Path, *, cxx: str | None = None) -> None:
    """Compile `source` with `flags` and the variant's, then link it (without them:
    -ffast-math at link time would add a start-up routine that turns on flush-to-zero for
    the whole process) into `out`, atomically.

    Raises:
        RuntimeError: no compiler, or it failed (the message ends with its error output).
    """
    import subprocess
    import tempfile

    cxx = cxx or compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    sha = f'-DCOOLCHIC_SOURCE_SHA="{source_sha(source)}"'
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = Path(tmp) / f"{source.stem}.o", Path(tmp) / out.name
        for command in ([cxx, *flags, *variant.flags, sha, "-c", str(source), "-o", str(obj)],
                        [cxx, "-shared", "-pthread", str(obj), "-o", str(lib)]):
            try:
                subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
            except subprocess.CalledProcessError as error:
                raise RuntimeError(f"{Path(cxx).name} failed: {error.stderr.strip()[-500:]}") from None
            except (OSError, subprocess.SubprocessError) as error:
                raise RuntimeError(f"{Path(cxx).name} failed: {error}") from None
        os.replace(lib, out)


def private_cache() -> Path:
    """The development build cache, created 0700; refused unless it is a folder owned by
    this user that nobody else can write (a library planted there would be loaded).

    Raises:
        RuntimeError: saying why the folder cannot be used.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = base / "coolchic"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError as error:
        raise RuntimeError(f"cannot create the build cache {folder}: {error}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeError(f"the build cache {folder} is not a folder")
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        raise RuntimeError(f"the build cache {folder} is not owned by this user, or others may write to it")
    return folder


def _open(path: Path, source: Path, version_symbol: str, version: int) -> ctypes.CDLL | str:
    """Load `path` if it was built from today's `source` at `version`, else say why not."""
    try:
        cdll = ctypes.CDLL(str(path))
    except OSError as error:
        return f"{path.name} does not load: {error}"
    sha = getattr(cdll, SHA_SYMBOL, None)
    if sha is None:
        return f"{path.name} is from an older build"
    sha.restype = ctypes.c_char_p
    if sha().decode() != source_sha(source):
        return f"{path.name} was built from another version of {source.name} (reinstall: pip install .)"
    if getattr(cdll, version_symbol)() != version:
        return f"{path.name}: kernels version mismatch"
    return cdll


def load(source: Path, *, flags: Sequence[str], version_symbol: str, version: int,
         install_dir: Path | None = None) -> ctypes.CDLL | str:
    """The library of `source` for this CPU: the installed one, else (with
    COOLCHIC_NATIVE=build) one compiled now into the private cache.

    Returns:
        The loaded library, whose ``version_symbol()`` returned `version`; or a one-line
        reason why none could be had.
    """
    mode = os.environ.get("COOLCHIC_NATIVE", "")
    if mode == "0":
        return "disabled by COOLCHIC_NATIVE=0"
    candidates = runnable_variants()
    install_dir = install_dir or INSTALL_DIR
    reasons = []
    for variant in candidates:
        path = install_dir / library_name(source, variant)
        if path.exists():
            opened = _open(path, source, version_symbol, version)
            if isinstance(opened, ctypes.CDLL):
                return opened
            reasons.append(opened)
    if mode != "build":
        if not reasons:
            reasons.append(f"no installed library for {source.name} (reinstall: pip install .)")
        return reasons[0] + "; COOLCHIC_NATIVE=build compiles it on first use"
    for variant in candidates:
        try:
            path = private_cache() / cache_name(source, variant)
            if path.exists():
                opened = _open(path, source, version_symbol, version)
                if isinstance(opened, ctypes.CDLL):
                    return opened
            build(source, flags, variant, path)
            return _open(path, source, version_symbol, version)
        except RuntimeError as error:
            reasons.append(f"{variant.name}: {error}")
    return f"building {source.name} failed: " + " | ".join(reasons)


@functools.cache
def warn_fallback(what: str, reason: str, consequence: str) -> None:
    """One line on stderr, once per process, when a native path is missing for a reason
    the user did not choose."""
    if not reason.startswith("disabled"):
        print(f"coolchic: {what} unavailable ({reason}); {consequence}", file=sys.stderr)
