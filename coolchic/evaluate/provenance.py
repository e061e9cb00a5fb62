"""Where a result came from: code revision, machine, command line."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import coolchic


def _git_dir() -> Path | None:
    """The git folder of the checkout this package runs from: ``.git``, or, in a linked
    worktree (``git worktree add``), the folder its ``.git`` file names."""
    for folder in Path(__file__).resolve().parents:
        candidate = folder / ".git"
        if candidate.is_dir():
            return candidate
        if candidate.is_file():
            try:
                text = candidate.read_text().strip()
            except OSError:
                return None
            if not text.startswith("gitdir: "):
                return None
            linked = Path(text[len("gitdir: "):])
            linked = linked if linked.is_absolute() else folder / linked
            return linked if linked.is_dir() else None
    return None


def _ref_folders(git_dir: Path) -> list[Path]:
    """Where a ref can live: the git folder, then, for a linked worktree, the main
    repository's (its ``commondir`` file)."""
    try:
        common = Path((git_dir / "commondir").read_text().strip())
    except OSError:
        return [git_dir]
    return [git_dir, common if common.is_absolute() else git_dir / common]


def _head_commit(git_dir: Path) -> str | None:
    """The commit HEAD points at, read from the repository files (no git process)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref: "):
        return head or None  # detached HEAD holds the commit itself
    ref = head[len("ref: ") :]
    for folder in _ref_folders(git_dir):
        try:
            return (folder / ref).read_text().strip()
        except OSError:
            pass
        try:  # refs that git has packed: "<sha> <refname>" lines
            for line in (folder / "packed-refs").read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha
        except OSError:
            pass
    return None


def code_revision() -> str:
    """``<package version>+g<12 hex of the checked-out commit>``, or the version alone
    when the package does not run from a git checkout. Uncommitted edits are not seen."""
    git_dir = _git_dir()
    commit = _head_commit(git_dir) if git_dir else None
    return f"{coolchic.__version__}+g{commit[:12]}" if commit else coolchic.__version__


def _cpu_model() -> str:
    """The CPU's model name on Linux (``/proc/cpuinfo``), else an empty string."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def machine_description(device: str = "cpu") -> str:
    """One line: OS, CPU, cores, Python, torch and the accelerator used (if any)."""
    parts = [
        platform.platform(terse=True),
        _cpu_model() or platform.machine(),
        f"{os.cpu_count()} CPU cores",
        f"Python {platform.python_version()}",
    ]
    if "torch" in sys.modules or device != "cpu":
        import torch

        parts.append(f"torch {torch.__version__}")
        if device.startswith("cuda") and torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name()}")
    parts.append(f"device {device}")
    return ", ".join(parts)


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed, shell-quoted, with the program's folder dropped
    (``coolchic reproduce-paper ...``, ``coolchic evaluate ...`` or ``python -m ...``)."""
    if argv is None:
        original = list(getattr(sys, "orig_argv", []))
        if "-m" in original:
            argv = ["python", *original[original.index("-m") :]]
        else:
            argv = list(sys.argv)
    args = list(argv)
    if args:
        args[0] = Path(args[0]).name
    return shlex.join(args)


def recipe_fingerprint(preset: str, iterations: int | None, arch: str | None) -> str:
    """12 hex digits that change whenever what our codec's encodes depend on does: the
    preset's phases (after `iterations`), the named decoder configurations and the rules
    by which `auto`, `best` and `race` pick among them. A run folder records it, so that a
    run resumed after such a change is refused rather than mixed."""
    import hashlib

    from coolchic import config
    from coolchic.presets import get_preset, stable_repr

    recipe = get_preset(preset)
    if iterations is not None:
        recipe = recipe.scaled_to(iterations)
    rules = (config.SMALL_FROM, config.SMALL_ARCH, config.SYNTH_FROM, config.SYNTH_ARCH,
             config.BEST_ALSO, config.RACE_ALSO, config.RACE_FRACTION, config.DEFAULT_ARCH)
    text = stable_repr((recipe, arch, sorted(config.ARCHS.items()), rules))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
