"""Training of the amortized models: random crops from an image folder, rate-distortion loss,
stages as data, checkpoints and resume.

Loss per batch: MSE (images in [0, 1]) + lmbda * rate in bits per pixel, the rate being the
model's own estimate (`forward`), plus the model's own regulariser where it has one
(``training_terms(x) -> (x_hat, rate, penalty)``, used in place of `forward`). A model module
(`registry` entry) provides ``build(config)`` and ``STAGES``: (fraction of the steps, model
attributes) pairs, applied in order.

A run writes ``checkpoint.pt`` in its output folder every `checkpoint_every` steps and when
interrupted (model, optimizer, step, random generators, options), and ``model.pt`` (the
weights and config only, what a codec ships) at the end. Running the same command again
resumes from the checkpoint and gives bit for bit the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coolchic.amortized import checkpoints, registry
from coolchic.io import read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"


@dataclass(frozen=True)
class TrainOptions:
    """One training run."""

    steps: int  # optimizer steps in all
    lmbda: float = 1e-3  # rate weight: loss = MSE + lmbda * bpp; larger = smaller files
    batch: int = 4  # crops per step
    crop: int = 64  # crop side in pixels (a multiple of 8)
    lr: float = 1e-4  # Adam learning rate
    checkpoint_every: int = 100  # steps between checkpoints
    seed: int = 0  # model initialisation and crop sampling

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch and checkpoint_every must be >= 1")
        if self.crop < 8 or self.crop % 8:
            raise ValueError(f"crop must be a positive multiple of 8, got {self.crop}")
        if not (self.lmbda >= 0 and self.lr > 0):
            raise ValueError("lmbda must be >= 0 and lr > 0")


@dataclass(frozen=True)
class TrainProgress:
    step: int  # steps done
    total: int
    stage: int  # index into the model's STAGES
    loss: float
    psnr_db: float  # of the batch, from its MSE
    bpp: float  # estimated rate of the batch


def image_files(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files under one folder or several (each searched recursively), sorted, each file
    once; ValueError when a folder is missing or there are no images at all."""
    roots = [Path(folders)] if isinstance(folders, (str, os.PathLike)) else [Path(f) for f in folders]
    if not roots:
        raise ValueError("no data folder given")
    found = set()
    for root in roots:
        if not root.is_dir():
            raise ValueError(f"no such data folder: {root}")
        found.update(p.resolve() for p in root.rglob("*")
                     if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under "
                         f"{', '.join(str(r) for r in roots)}")
    return sorted(found)


def _crops(files: list[Path], rng: np.random.Generator, batch: int, crop: int) -> torch.Tensor:
    """(batch, 3, crop, crop) float32 random crops in [0, 1] of random files (8-bit only)."""
    out = []
    while len(out) < batch:
        image, bit_depth = read_image(files[int(rng.integers(len(files)))])
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        h, w = image.shape[:2]
        if h < crop or w < crop:
            raise ValueError(f"images must be at least {crop}x{crop} pixels for --crop {crop}")
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        patch = image[y : y + crop, x : x + crop].astype(np.float32) / ((1 << bit_depth) - 1)
        out.append(torch.from_numpy(patch).permute(2, 0, 1))
    return torch.stack(out)


def stage_at(stages, step: int, total: int) -> int:
    """Index of the stage that step `step` (0-based) of `total` belongs to."""
    end = 0.0
    for index, (fraction, _) in enumerate(stages):
        end += fraction
        if step < round(end * total):
            return index
    return len(stages) - 1


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model(path: str | os.PathLike):
    """A model from a `model.pt` or `checkpoint.pt` file of `train` (`checkpoints.load`)."""
    return checkpoints.load(path)


def train(name: str, data: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
          options: TrainOptions, *, config: dict | None = None, resume: bool = True,
          callback: Callable[[TrainProgress], None] | None = None):
    """Train model `name` on crops of the images under `data`; write checkpoints in `out`.

    Args:
        name: a registry name with an implementation (e.g. "cwic").
        data: one folder or several (`image_files`).
        config: overrides of the model's default configuration.
        resume: continue from ``out/checkpoint.pt`` when it exists (its model, config and
            options must match, except that `steps` may grow).
        callback: called after every step.

    Returns:
        The trained model (also saved as ``out/model.pt``).
    """
    entry = registry.get(name)
    module = entry.load()
    if not hasattr(module, "STAGES"):
        raise ValueError(f"model {name!r} cannot be trained yet")
    files = image_files(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(options.seed)
    model = module.build(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    rng = np.random.default_rng(options.seed)
    step = 0
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        same = {k: v for k, v in saved["options"].items() if k != "steps"}
        mine = {k: v for k, v in dataclasses.asdict(options).items() if k != "steps"}
        if saved["model"] != name or saved["config"] != (config or {}) or same != mine:
            raise ValueError(f"{checkpoint} belongs to another run (model, config or options "
                             "differ); use another output folder or --no-resume")
        model.load_state_dict(saved["state"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        step = saved["step"]

    def payload(final: bool) -> dict:
        stage_attrs = module.STAGES[stage_at(module.STAGES, max(step - 1, 0), options.steps)][1]
        body = {"model": name, "config": config or {}, "state": model.state_dict(),
                "attributes": stage_attrs, "images": len(files)}
        if not final:
            body.update(optimizer=optimizer.state_dict(), step=step, numpy_rng=rng.bit_generator.state,
                        torch_rng=torch.get_rng_state(), options=dataclasses.asdict(options))
        return body

    in_step, rng_before = False, rng.bit_generator.state
    try:
        while step < options.steps:
            in_step, rng_before = True, rng.bit_generator.state
            stage = stage_at(module.STAGES, step, options.steps)
            for attr, value in module.STAGES[stage][1].items():
                setattr(model, attr, value)
            x = _crops(files, rng, options.batch, options.crop)
            optimizer.zero_grad()
            if hasattr(model, "training_terms"):
                x_hat, rate, penalty = model.training_terms(x)
            else:
                (x_hat, rate), penalty = model(x), 0.0
            mse = torch.mean((x_hat - x) ** 2)
            bpp = rate.mean() / (options.crop * options.crop)
            loss = mse + options.lmbda * bpp + penalty
            loss.backward()
            optimizer.step()
            step += 1
            in_step = False
            if step % options.checkpoint_every == 0 or step == options.steps:
                _save(checkpoint, payload(final=False))
            if callback is not None:
                m = float(mse.detach())
                callback(TrainProgress(step, options.steps, stage, float(loss.detach()),
                                       -10 * math.log10(max(m, 1e-12)), float(bpp.detach())))
    except KeyboardInterrupt:
        if in_step:  # the weights are those of `step` steps: sample that step's crops again
            rng.bit_generator.state = rng_before
        _save(checkpoint, payload(final=False))
        raise
    _save(out / FINAL, payload(final=True))
    return model
