"""Resumable encodes: the training state of an encode, saved every so often to a file, so
that an encode that was stopped (Ctrl-C, a killed job, a machine handed back) goes on from
its last save when it is run again, and ends in the same bitstream as an encode that never
stopped.

A save holds everything the rest of the training depends on: the model, the optimizer's
moments and step, the schedule's position, the best state seen so far and the generator
state that draws the training noise. It is written atomically
(`coolchic.io.atomic_write_bytes`) and read with ``torch.load(weights_only=True)``, so a
file planted in its place can fail to load but cannot run code. A save made by another
encode (other image, lambda, decoder, recipe, seed, device or training kernels) is ignored,
with a warning.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from coolchic.io import atomic_write_bytes
from coolchic.presets import stable_repr

FORMAT = 1  # version of the saved dictionary's layout
DEFAULT_EVERY_S = 60.0  # seconds of training between two saves


def identity(*, image: torch.Tensor, lmbda: float, config: object, preset: object, seed: int,
             device: str, kernels: str) -> dict[str, str]:
    """What a save must match to be resumed: the image's pixels (SHA-256), lambda, the
    decoder configuration and the recipe (their reprs), the seed, the device, the training
    kernels and this torch's version (its kernels decide the float results)."""
    pixels = image.detach().cpu().contiguous().numpy().tobytes()
    return {
        "image": hashlib.sha256(pixels).hexdigest() + f" {tuple(image.shape)}",
        "lmbda": repr(float(lmbda)),
        "config": repr(config),
        "preset": stable_repr(preset),
        "seed": str(seed),
        "device": device,
        "kernels": kernels,
        "torch": str(torch.__version__),
    }


@dataclass
class Checkpointer:
    """Saves an encode's training state to `path` at most every `every_s` seconds (0:
    after every iteration)."""

    path: Path
    identity: dict[str, str]
    every_s: float = DEFAULT_EVERY_S
    _last: float = field(default_factory=time.monotonic)

    def load(self) -> dict | None:
        """The saved state of this encode, or None (no file, another encode's file, or a
        file that cannot be read: each but the first with a warning)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, not a torch file, unsafe content
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            warnings.warn(f"ignoring unreadable training state {self.path} ({reason}); "
                          "training from the start", stacklevel=2)
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            warnings.warn(f"ignoring {self.path}: not a training state of this version; "
                          "training from the start", stacklevel=2)
            return None
        if state.get("identity") != self.identity:
            theirs = state.get("identity") or {}
            differ = sorted(k for k in self.identity if theirs.get(k) != self.identity[k])
            warnings.warn(f"ignoring {self.path}: saved by another encode (its {', '.join(differ)} "
                          "differ); training from the start", stacklevel=2)
            return None
        return state

    def due(self) -> bool:
        """Whether a save is due."""
        return time.monotonic() - self._last >= self.every_s

    def save(self, state: dict) -> None:
        """Write `state` (with this encode's identity) over the last save, atomically."""
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "identity": self.identity, **state}, buffer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buffer.getvalue())
        self._last = time.monotonic()


def saved_seconds(path: Path) -> float:
    """The wall seconds of training that the save in `path` accounts for (its runs
    before and including the one that wrote it); 0.0 when there is none to read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return float(state.get("elapsed_s", 0.0))
    except Exception:  # missing, unreadable: nothing to add
        return 0.0


def rng_state(device: str) -> dict[str, torch.Tensor]:
    """The generator states that draw the training noise on `device`."""
    state = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: str) -> None:
    torch.set_rng_state(state["cpu"])
    if device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], device)
