"""Several images -> bitstreams, trained as batches (issue 27).

Images are grouped by (size, channels, decoder configuration), the only things a batch's
encodes must share; each group is cut into batches of at most `batch` encodes, in input
order, and each batch trained by ``coolchic.train_batch.overfit_batch``. Every encode keeps
its own lambda and seed; its model is then integerized, entropy-coded and written as a
single encode's is (``coolchic.encode.code_model``), so its bitstream decodes with the
normal decoder. An encode's bytes do not depend on the batch it was trained in; they differ
from ``coolchic.encode.encode``'s, a different training path (see ``coolchic.train_batch``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coolchic.config import (
    AUTO_ARCH,
    BEST_ARCH,
    RACE_ARCH,
    DecoderConfig,
    auto_arch,
    check_arch_name,
    get_arch,
)
from coolchic.decoder.api import DECODER_MAX_PIXELS
from coolchic.decoder.dispatch import check_device
from coolchic.encode import (
    EncodeResult,
    code_model,
    effective_config,
    encode_report,
    image_array,
    image_tensor,
)
from coolchic.presets import DEFAULT_PRESET, Preset, get_preset
from coolchic.train_batch import BatchProgress, overfit_batch


@dataclass(frozen=True)
class BatchEncodeProgress:
    """What `encode_batch`'s callback receives while a batch trains."""

    batch: int  # 0-based number of this batch
    batches: int  # batches in the whole run
    indices: tuple[int, ...]  # the inputs this batch encodes (positions in `images`)
    training: BatchProgress  # one value per encode, in the order of `indices`


BatchEncodeCallback = Callable[[BatchEncodeProgress], None]


@dataclass(frozen=True)
class _Job:
    index: int
    array: np.ndarray
    bit_depth: int
    lmbda: float
    seed: int
    arch: str
    config: DecoderConfig


def _per_image(value, n: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * n
    if len(values) != n:
        raise ValueError(f"{n} images need one {name} or {n}, got {len(values)}")
    return values


def plan_batches(keys: Sequence, batch: int | None) -> list[list[int]]:
    """Positions of `keys` grouped by equal key (first appearance first), each group cut
    into runs of at most `batch` (None: no limit), positions in input order."""
    groups: dict = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    step = batch or len(keys)
    return [g[i : i + step] for g in groups.values() for i in range(0, len(g), step)]


def encode_batch(
    images: Sequence[np.ndarray | str | Path],
    *,
    lmbda: float | Sequence[float],
    preset: str | Preset = DEFAULT_PRESET,
    iterations: int | None = None,
    device: str = "cpu",
    seed: int | Sequence[int] = 0,
    arch: str | DecoderConfig | None = None,
    batch: int | None = None,
    callback: BatchEncodeCallback | None = None,
    on_result: Callable[[int, EncodeResult], None] | None = None,
    report_every: int = 25,
    graphs: bool = True,
) -> list[EncodeResult]:
    """Encode several images (arrays or paths), training them in batches; results in
    input order. An encode's bitstream is the same whatever else is in its batch.

    Args:
        lmbda: one rate weight for all images, or one per image (each finite, > 0).
        seed: one seed for all images, or one per image.
        arch: decoder configuration name, "auto" (None: per image, as `encode`'s), or a
            DecoderConfig; "best" and "race" (several trainings per image) are refused.
        batch: at most this many encodes per batch (None: a whole group at once).
        callback: called every `report_every` iterations of a batch (each call waits
            for the device).
        on_result: called with (position, result) as each bitstream is done, e.g. to write
            it before the others finish.
        graphs: on CUDA, replay each training step as a captured CUDA graph.
    """
    recipe = preset if isinstance(preset, Preset) else get_preset(preset)
    if iterations is not None:
        recipe = recipe.scaled_to(iterations)
    if recipe.warmup_iterations:
        raise ValueError(f"preset {recipe.name!r} has a warm-up, which batched encoding does not run")
    if not isinstance(arch, DecoderConfig) and check_arch_name(arch or AUTO_ARCH) in (BEST_ARCH, RACE_ARCH):
        raise ValueError(f"arch {arch!r} trains several decoders per image; batched encoding takes "
                         f"{AUTO_ARCH} or one decoder")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    check_device(device)
    n = len(images)
    lmbdas, seeds = _per_image(lmbda, n, "lambda"), _per_image(seed, n, "seed")
    for value in lmbdas:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"lambda must be a finite number > 0, got {value}")
    jobs = []
    for k, (image, value, s) in enumerate(zip(images, lmbdas, seeds)):
        array, bit_depth = image_array(image)
        h, w, _ = array.shape
        if h * w > DECODER_MAX_PIXELS:
            raise ValueError(f"images above {DECODER_MAX_PIXELS} pixels are not supported ({w}x{h})")
        if isinstance(arch, DecoderConfig):
            name, config = "custom", arch
        else:
            name = auto_arch(value, h, w) if arch in (None, AUTO_ARCH) else arch
            config = get_arch(name)
        jobs.append(_Job(k, array, bit_depth, float(value), int(s), name, effective_config(config, h, w)))

    plan = plan_batches([(j.array.shape, j.config) for j in jobs], batch)
    results: list[EncodeResult | None] = [None] * n
    for number, positions in enumerate(plan):
        start = time.perf_counter()
        members = [jobs[k] for k in positions]
        progress = None if callback is None else (
            lambda p, number=number, positions=positions: callback(
                BatchEncodeProgress(number, len(plan), tuple(positions), p)))
        x = torch.cat([image_tensor(j.array, j.bit_depth) for j in members])  # (B, C, H, W)
        models = overfit_batch(x, members[0].config, recipe, [j.lmbda for j in members],
                               seeds=[j.seed for j in members], device=device, callback=progress,
                               report_every=report_every, graphs=graphs)
        for job, model in zip(members, models):
            coded = code_model(model, job.array, bit_depth=job.bit_depth, lmbda=job.lmbda,
                               refine_trials=recipe.refine_trials)
            report = encode_report(coded, lmbda=job.lmbda, preset=recipe.name, arch=job.arch,
                                   iterations=recipe.iterations, seconds=time.perf_counter() - start)
            results[job.index] = EncodeResult(coded.data, coded.reconstruction, report)
            if on_result is not None:
                on_result(job.index, results[job.index])
    return results
