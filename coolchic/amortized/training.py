"""Training of the amortized models: random crops from an image folder, rate-distortion loss
(`objective`), stages as data, a learning-rate schedule (`schedule`), validation on fixed
crops, checkpoints and resume.

A model module (`registry` entry) provides ``build(config)``, ``STAGES``: (fraction of the
steps, model attributes) pairs, applied in order, and ``CONFIGS``: its named sizes.

A run writes in its output folder:

* ``checkpoint.pt`` every `checkpoint_every` steps and when interrupted (model, optimizer,
  step, random generators, options, wall seconds so far);
* ``model.pt`` at the end: the weights and config only, what a codec ships;
* ``model-best.pt`` (with validation): the weights of the lowest validation loss so far,
  with that loss (``val_loss``) and its step;
* ``recipe.json`` (`RECIPE`), rewritten at the start, at each checkpoint and at the end.

Running the same command again resumes from the checkpoint and gives bit for bit the
weights of an uninterrupted run (on the same device). Validating never changes them: the
validation crops come from their own generator and are evaluated in eval mode without
gradients, the random generators restored. Saved tensors are CPU tensors whatever the
device, so every file loads on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

import coolchic
from coolchic.amortized import checkpoints, registry
from coolchic.amortized.data import fixed_crops, image_files, random_crops, split_files
from coolchic.amortized.objective import Validation, batch_terms, validate
from coolchic.amortized.schedule import LrSchedule, lr_at
from coolchic.decoder.dispatch import check_device
from coolchic.io import atomic_write_bytes

__all__ = ["BEST", "CHECKPOINT", "FINAL", "RECIPE", "TrainOptions", "TrainProgress", "image_files",
           "load_model", "stage_at", "train"]

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"
BEST = "model-best.pt"
RECIPE = "recipe.json"
Device = Literal["cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
# Options a resumed run may change: none of them moves the weights of a step.
RESUMABLE_CHANGES = ("steps", "device", "checkpoint_every", "val_every")


@dataclass(frozen=True)
class TrainOptions:
    """One training run."""

    steps: int  # optimizer steps in all
    lmbda: float = 1e-3  # rate weight: loss = MSE + lmbda * bpp; larger = smaller files
    batch: int = 4  # crops per step
    crop: int = 64  # crop side in pixels (a multiple of 8)
    lr: float = 1e-4  # Adam's peak learning rate (`schedule` moves it)
    checkpoint_every: int = 100  # steps between checkpoints
    seed: int = 0  # model initialisation, crop sampling and validation crops
    schedule: LrSchedule = LrSchedule()  # learning rate over the steps; constant by default
    device: Device = "cpu"  # where the model, crops and optimizer live
    val_fraction: float = 0.0  # share of the data images held out for validation (0: none)
    val_every: int = 100  # steps between validations, when there are validation images
    val_crops: int = 16  # fixed validation crops, each crop x crop pixels

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch and checkpoint_every must be >= 1")
        if self.crop < 8 or self.crop % 8:
            raise ValueError(f"crop must be a positive multiple of 8, got {self.crop}")
        if not (self.lmbda >= 0 and self.lr > 0):
            raise ValueError("lmbda must be >= 0 and lr > 0")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.val_every < 1 or self.val_crops < 1:
            raise ValueError("val_every and val_crops must be >= 1")


@dataclass(frozen=True)
class TrainProgress:
    step: int  # steps done
    total: int
    stage: int  # index into the model's STAGES
    loss: float
    psnr_db: float  # of the batch, from its MSE
    bpp: float  # estimated rate of the batch
    lr: float = 0.0  # learning rate of the step
    seconds: float = 0.0  # wall seconds of the run so far, earlier runs it resumed included
    validation: Validation | None = None  # measured after this step, else None


def stage_at(stages, step: int, total: int) -> int:
    """Index of the stage that step `step` (0-based) of `total` belongs to."""
    end = 0.0
    for index, (fraction, _) in enumerate(stages):
        end += fraction
        if step < round(end * total):
            return index
    return len(stages) - 1


def _save(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_model(path: str | os.PathLike):
    """A model from a `model.pt`, `model-best.pt` or `checkpoint.pt` file of `train`
    (`checkpoints.load`; on the CPU)."""
    return checkpoints.load(path)


def parameter_count(model: torch.nn.Module) -> int:
    """Number of trainable scalars of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_device(device: str) -> torch.device:
    return torch.device(check_device(device))


def _validation_files(files: list[Path], options: TrainOptions,
                      val_data) -> tuple[list[Path], list[Path]]:
    """(training files, validation files) from the data files, `val_fraction` or `val_data`."""
    if options.val_fraction and val_data is not None:
        raise ValueError("give validation images either as a folder or as a fraction, not both")
    if options.val_fraction:
        return split_files(files, fraction=options.val_fraction)
    if val_data is None:
        return files, []
    val_files = image_files(val_data)
    both = set(files) & set(val_files)
    if both:
        raise ValueError(f"{len(both)} validation image(s) are also training images, e.g. "
                         f"{min(both)}")
    return files, val_files


def _resumed_options(saved: dict) -> dict:
    """A checkpoint's options, fields it predates at their defaults (old runs resume)."""
    return {**dataclasses.asdict(TrainOptions(steps=1)), **saved}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def train(name: str, data: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
          options: TrainOptions, *, config: dict | None = None, config_name: str | None = None,
          val_data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
          resume: bool = True, callback: Callable[[TrainProgress], None] | None = None,
          command: dict | None = None):
    """Train model `name` on crops of the images under `data`; write checkpoints in `out`.

    Args:
        name: a registry name with an implementation (e.g. "cwic").
        data: one folder or several (`image_files`).
        config: overrides of the model's configuration (on top of `config_name`'s).
        config_name: one of the model's named sizes (``CONFIGS``, e.g. "small", "paper").
        val_data: validation folder(s), none of whose images may be a training image; or
            hold images out with `options.val_fraction` instead.
        resume: continue from ``out/checkpoint.pt`` when it exists (its model, config and
            options must match, except those in `RESUMABLE_CHANGES`; a larger `steps`
            stretches a cosine schedule, so it changes the weights from there on).
        callback: called after every step.
        command: how the run was asked for (JSON-able), copied into ``recipe.json``.

    Returns:
        The trained model, on `options.device` (also saved as ``out/model.pt``).

    Raises:
        ValueError: unknown model or config name, no CUDA device for ``cuda``, bad data or
            validation folders, a checkpoint of another run.
    """
    entry = registry.get(name)
    module = entry.load()
    if not hasattr(module, "STAGES"):
        raise ValueError(f"model {name!r} cannot be trained yet")
    config = {**(entry.config(config_name) if config_name is not None else {}), **(config or {})}
    device = _check_device(options.device)
    files, val_files = _validation_files(image_files(data), options, val_data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(options.seed)
    model = module.build(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    rng = np.random.default_rng(options.seed)
    val_crops = (fixed_crops(val_files, count=options.val_crops, crop=options.crop,
                             seed=options.seed).to(device) if val_files else None)
    step, earlier_seconds, best_loss, last_validation = 0, 0.0, math.inf, None
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        theirs = {k: v for k, v in _resumed_options(saved["options"]).items() if k not in RESUMABLE_CHANGES}
        mine = {k: v for k, v in dataclasses.asdict(options).items() if k not in RESUMABLE_CHANGES}
        if saved["model"] != name or saved["config"] != config or theirs != mine:
            raise ValueError(f"{checkpoint} belongs to another run (model, config or options "
                             "differ); use another output folder or --no-resume")
        model.load_state_dict(saved["state"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        step, earlier_seconds = saved["step"], saved.get("seconds", 0.0)
        if (out / BEST).exists():
            best_loss = torch.load(out / BEST, map_location="cpu", weights_only=False)["val_loss"]
    start = time.perf_counter()

    def seconds() -> float:
        return earlier_seconds + time.perf_counter() - start

    def payload(final: bool) -> dict:
        stage_attrs = module.STAGES[stage_at(module.STAGES, max(step - 1, 0), options.steps)][1]
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        body = {"model": name, "config": config, "state": state, "attributes": stage_attrs,
                "images": len(files)}
        if not final:
            body.update(optimizer=optimizer.state_dict(), step=step, numpy_rng=rng.bit_generator.state,
                        torch_rng=torch.get_rng_state(), options=dataclasses.asdict(options),
                        seconds=seconds(),
                        cuda_rng=torch.cuda.get_rng_state() if device.type == "cuda" else None)
        return body

    def write_recipe() -> None:
        from coolchic.evaluate.provenance import code_revision, machine_description

        recipe = {
            "model": name, "config_name": config_name, "config_overrides": config,
            "config": dataclasses.asdict(model.config), "parameters": parameter_count(model),
            "options": dataclasses.asdict(options), "command": command,
            "images": {"train": len(files), "validation": len(val_files)},
            "device": options.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "machine": machine_description(options.device), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "coolchic": coolchic.__version__, "revision": code_revision(),
            "steps_done": step, "finished": step >= options.steps, "seconds": round(seconds(), 3),
            "best_val_loss": best_loss,
            "last_validation": dataclasses.asdict(last_validation) if last_validation else None,
        }
        atomic_write_bytes(out / RECIPE, (json.dumps(_jsonable(recipe), indent=2) + "\n").encode())

    write_recipe()
    in_step, rng_before = False, rng.bit_generator.state
    # cuDNN may otherwise pick kernels that sum in a varying order: resume would not be exact
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                    deterministic=True):
        try:
            while step < options.steps:
                in_step, rng_before = True, rng.bit_generator.state
                stage = stage_at(module.STAGES, step, options.steps)
                for attr, value in module.STAGES[stage][1].items():
                    setattr(model, attr, value)
                x = random_crops(files, rng, batch=options.batch, crop=options.crop).to(device)
                lr = lr_at(options.schedule, lr=options.lr, step=step, total=options.steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad()
                terms = batch_terms(model, x, lmbda=options.lmbda)
                terms.loss.backward()
                optimizer.step()
                step += 1
                in_step = False
                validation = None
                if val_crops is not None and (step % options.val_every == 0 or step == options.steps):
                    validation = last_validation = validate(model, val_crops, lmbda=options.lmbda,
                                                            batch=options.batch, step=step)
                    if validation.loss < best_loss:
                        best_loss = validation.loss
                        _save(out / BEST, {**payload(final=True), "val_loss": best_loss, "step": step})
                if step % options.checkpoint_every == 0 or step == options.steps:
                    _save(checkpoint, payload(final=False))
                    write_recipe()
                if callback is not None:
                    m = float(terms.mse.detach())
                    callback(TrainProgress(step, options.steps, stage, float(terms.loss.detach()),
                                           -10 * math.log10(max(m, 1e-12)), float(terms.bpp.detach()),
                                           lr, seconds(), validation))
        except KeyboardInterrupt:
            if in_step:  # the weights are those of `step` steps: sample that step's crops again
                rng.bit_generator.state = rng_before
            _save(checkpoint, payload(final=False))
            write_recipe()
            raise
    _save(out / FINAL, payload(final=True))
    write_recipe()
    return model
