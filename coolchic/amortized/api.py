"""Image -> bytes -> image with an amortized codec: what `coolchic encode --codec NAME`,
`coolchic decode` and `coolchic info` call for the amortized codecs.

The weights come from a shipped checkpoint (`checkpoints`), chosen by quality when encoding
and by the quality written in the stream when decoding, or from an explicit checkpoint file.
`describe` reads only the container, so it needs neither torch nor weights.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coolchic.amortized import checkpoints, registry
from coolchic.amortized.codec import read_stream
from coolchic.bitstream import BitstreamError, read_bitstream

# Beyond this the code tensors and context features grow past a few GB.
MAX_PIXELS = 1 << 26


def image_codecs() -> tuple[str, ...]:
    """Names of the amortized image codecs (registry entries with a codec id)."""
    return tuple(entry.name for entry in registry.MODELS if entry.codec_id is not None)


@dataclass(frozen=True)
class AmortizedReport:
    codec: str  # registry name
    quality: int  # the weights' nominal quality, written in the stream
    checkpoint: str  # file the weights came from
    height: int
    width: int
    n_bytes: int  # whole bitstream
    bpp: float  # from the whole bitstream's size
    psnr_db: float  # of the decoded image against the input (RGB, 8-bit)
    encode_seconds: float


@dataclass(frozen=True)
class AmortizedResult:
    data: bytes  # the bitstream
    reconstruction: np.ndarray  # exactly what `decode(data)` gives, uint8 (H, W, 3)
    report: AmortizedReport


def _model(name: str, *, quality: float | None, exact: bool,
           checkpoint: str | os.PathLike | None):
    if checkpoint is not None:
        return checkpoints.load(checkpoint, name=name), Path(checkpoint)
    path = checkpoints.shipped_path(name, quality=quality, exact=exact)
    return checkpoints.load_shipped(name, quality=quality, exact=exact), path


def rgb8(image: np.ndarray | str | os.PathLike, codec: str) -> np.ndarray:
    """uint8 (H, W, 3) of an 8-bit RGB or gray image (array or file) for amortized codec
    `codec` (gray repeated to 3 channels).

    Raises:
        ValueError: unreadable, not 8-bit, not RGB/gray, or too large (one line).
    """
    if isinstance(image, (str, os.PathLike)):
        from coolchic.io import read_image

        image, bit_depth = read_image(image)
        if bit_depth != 8:
            raise ValueError(f"the {codec} codec codes 8-bit images, this one is {bit_depth}-bit")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)  # gray is coded as RGB
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the {codec} codec codes uint8 RGB images, got {image.shape} {image.dtype}")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ValueError(f"images above {MAX_PIXELS} pixels are not supported by the amortized codecs")
    return image


def encode(image: np.ndarray | str | os.PathLike, *, codec: str, quality: float | None = None,
           checkpoint: str | os.PathLike | None = None) -> AmortizedResult:
    """Encode an image (uint8 RGB array or path) with amortized codec `codec`.

    Args:
        codec: one of `image_codecs()`.
        quality: 0..100, picks the shipped checkpoint of nearest quality (default 50);
            not with `checkpoint`.
        checkpoint: a `model.pt` of `coolchic amortized train` to use instead.

    Raises:
        ValueError: unknown codec, bad image, missing checkpoint (one line each).
    """
    if codec not in image_codecs():
        raise ValueError(f"unknown amortized codec {codec!r}; expected one of {', '.join(image_codecs())}")
    if quality is not None and checkpoint is not None:
        raise ValueError("give --quality or --checkpoint, not both: a checkpoint has its own quality")
    array = rgb8(image, codec)
    start = time.perf_counter()
    model, path = _model(codec, quality=quality, exact=False, checkpoint=checkpoint)
    data = model.compress(array)
    reconstruction = model.reconstruct(array)
    seconds = time.perf_counter() - start
    from coolchic.metrics import psnr_images

    h, w = array.shape[:2]
    report = AmortizedReport(codec=codec, quality=model.quality, checkpoint=str(path), height=h,
                             width=w, n_bytes=len(data), bpp=8.0 * len(data) / (h * w),
                             psnr_db=psnr_images(array, reconstruction, 8), encode_seconds=seconds)
    return AmortizedResult(data, reconstruction, report)


def decode(data: bytes, *, checkpoint: str | os.PathLike | None = None) -> np.ndarray:
    """Decode an amortized codec's bitstream to uint8 (H, W, 3).

    Args:
        checkpoint: the weights to decode with; by default the shipped checkpoint of the
            stream's model and quality.

    Raises:
        BitstreamError: an invalid stream, or weights other than the ones that wrote it.
        ValueError: the weights are missing (one line).
    """
    stream = read_stream(data)
    if stream.header.height * stream.header.width > MAX_PIXELS:
        raise BitstreamError(f"a {stream.header.width}x{stream.header.height} image exceeds the "
                             f"amortized decoders' limit of {MAX_PIXELS} pixels")
    if not stream.config or stream.config[0] > checkpoints.MAX_QUALITY:
        raise BitstreamError(f"invalid bitstream: the {stream.entry.name} CONFIG has no valid quality")
    model, _ = _model(stream.entry.name, quality=stream.config[0], exact=True, checkpoint=checkpoint)
    return model.decompress(data)


@dataclass(frozen=True)
class AmortizedInfo:
    """What `coolchic info` shows for an amortized stream."""

    entry: registry.ModelEntry
    height: int
    width: int
    quality: int
    model_crc: int
    section_bytes: dict[str, int]
    total_bytes: int

    @property
    def bpp(self) -> float:
        return 8.0 * self.total_bytes / (self.height * self.width)


def describe(data: bytes) -> AmortizedInfo:
    """The container fields of an amortized stream, without weights or decoding.

    Raises:
        BitstreamError: not a valid amortized stream.
    """
    stream = read_stream(data)
    _, sections = read_bitstream(data)
    if not stream.config:
        raise BitstreamError(f"invalid bitstream: the {stream.entry.name} CONFIG has no quality")
    return AmortizedInfo(stream.entry, stream.header.height, stream.header.width, stream.config[0],
                         stream.model_crc, {k.name: len(v) for k, v in sections.items()}, len(data))
