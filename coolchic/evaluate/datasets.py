"""Evaluation images: list a directory, select by name, centre-crop.

Every codec of a run, ours and the classical ones, sees exactly the pixels this module
returns, so rate-distortion points measured in one run are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coolchic.evaluate.errors import EvaluationError

# Lossless formats only: a JPEG source would evaluate codecs against JPEG artefacts.
IMAGE_SUFFIXES = (".png", ".ppm", ".pgm", ".pnm", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class EvalImage:
    """One evaluation image as given to every codec.

    Attributes:
        name: file stem, the image's key in every result file (e.g. ``kodim01``).
        path: the source file, recorded so a run can be audited.
        pixels: (H, W, C) uint8 or uint16 array, already cropped.
        bit_depth: bits per sample of the source (8 for Kodak).
    """

    name: str
    path: Path
    pixels: np.ndarray
    bit_depth: int


def list_images(directory: str | Path, *, names: list[str] | None = None) -> list[Path]:
    """Image files of a directory, sorted by name.

    Args:
        directory: folder holding the images (not searched recursively).
        names: keep only these images, given as stems (``kodim01``) or file names;
            each must exist.

    Raises:
        EvaluationError: the folder is missing, holds no image, or a requested name is absent.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise EvaluationError(f"image directory not found: {folder}")
    found = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not found:
        raise EvaluationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if names is None:
        return found
    by_key = {p.stem: p for p in found} | {p.name: p for p in found}
    missing = [n for n in names if n not in by_key]
    if missing:
        raise EvaluationError(f"image(s) not in {folder}: {', '.join(missing)}")
    # dict.fromkeys keeps the requested order and drops duplicates.
    return list(dict.fromkeys(by_key[n] for n in names))


def centre_crop(pixels: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size`` x ``size`` window (clipped to the image), or the image itself.

    Args:
        pixels: (H, W, C) array.
        size: side of the square crop in pixels; None keeps the whole image. When one
            side is shorter than ``size``, that side is kept whole.

    Returns:
        (min(H, size), min(W, size), C) view of ``pixels``; the offset is rounded down,
        so an odd margin leaves its extra pixel at the bottom/right.
    """
    if size is None:
        return pixels
    if size <= 0:
        raise EvaluationError(f"crop size must be positive, got {size}")
    height, width = pixels.shape[:2]
    crop_h, crop_w = min(size, height), min(size, width)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return pixels[top : top + crop_h, left : left + crop_w]


def load_image(path: str | Path, *, crop: int | None = None) -> EvalImage:
    """Read one image and centre-crop it.

    Raises:
        EvaluationError: the file cannot be read as an RGB image.
    """
    from coolchic.io import read_image

    path = Path(path)
    try:
        pixels, bit_depth = read_image(path)
    except (OSError, ValueError) as err:
        raise EvaluationError(f"cannot read {path}: {err}") from err
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise EvaluationError(f"{path}: expected an RGB image, got shape {pixels.shape}")
    return EvalImage(
        name=path.stem,
        path=path,
        pixels=np.ascontiguousarray(centre_crop(pixels, crop)),
        bit_depth=bit_depth,
    )
