"""Images of amortized training: the files under data folders, random training crops, a
deterministic validation split and a fixed set of validation crops.

Crops are float32 (N, 3, crop, crop) tensors in [0, 1] on the CPU; gray images become three
equal channels. Training crops come from the run's generator (its state is checkpointed);
validation crops come from a generator of their own, made once, so that validating never
moves the training generator.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from coolchic.io import read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
VALIDATION_STREAM = 0x7A1  # second word of the validation generator's seed: apart from training's


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


def split_files(files: Sequence[Path], *, fraction: float) -> tuple[list[Path], list[Path]]:
    """(training, validation) files: `fraction` of the files held out for validation.

    The held-out files are those whose names have the smallest CRC-32, ties broken by path:
    the split does not depend on the seed, on the folder the data lies in, or on the order
    the files were found in, and adding an image moves at most one file across.

    Args:
        files: the images (at least 2).
        fraction: share to hold out, 0 < fraction < 1; at least one file on each side.

    Raises:
        ValueError: fraction out of range, or too few files for two non-empty sets.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    if len(files) < 2:
        raise ValueError(f"holding out validation images needs at least 2 images, got {len(files)}")
    count = min(max(1, round(fraction * len(files))), len(files) - 1)
    ranked = sorted(files, key=lambda p: (zlib.crc32(Path(p).name.encode()), str(p)))
    held = set(ranked[:count])
    return [p for p in files if p not in held], sorted(held)


def _rgb(path: Path, crop: int) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1] of an image at least crop x crop pixels."""
    image, bit_depth = read_image(path)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    h, w = image.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"images must be at least {crop}x{crop} pixels for --crop {crop}: {path}")
    return image.astype(np.float32) / ((1 << bit_depth) - 1)


def _patch(image: np.ndarray, rng: np.random.Generator, crop: int) -> torch.Tensor:
    """(3, crop, crop) crop of (H, W, 3) `image` at a position drawn from `rng`."""
    h, w = image.shape[:2]
    y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    return torch.from_numpy(np.ascontiguousarray(image[y : y + crop, x : x + crop])).permute(2, 0, 1)


def random_crops(files: Sequence[Path], rng: np.random.Generator, *, batch: int, crop: int) -> torch.Tensor:
    """(batch, 3, crop, crop) crops of files drawn from `rng`, then positions drawn from it."""
    out = []
    while len(out) < batch:
        out.append(_patch(_rgb(files[int(rng.integers(len(files)))], crop), rng, crop))
    return torch.stack(out)


def fixed_crops(files: Sequence[Path], *, count: int, crop: int, seed: int) -> torch.Tensor:
    """(count, 3, crop, crop) validation crops: file i % len(files) for crop i, positions from
    a generator seeded by (seed, VALIDATION_STREAM); the same crops for the same arguments.

    Raises:
        ValueError: count < 1, or an image smaller than the crop.
    """
    if count < 1:
        raise ValueError(f"validation crops must be >= 1, got {count}")
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    images: dict[int, np.ndarray] = {}
    out = []
    for i in range(count):
        index = i % len(files)
        if index not in images:
            images[index] = _rgb(files[index], crop)
        out.append(_patch(images[index], rng, crop))
    return torch.stack(out)
