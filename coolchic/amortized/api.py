"""Image -> bytes -> image with an amortized codec: what `coolchic encode --codec NAME`,
`coolchic decode` and `coolchic info` call for the amortized codecs.

The weights come from a shipped checkpoint (`checkpoints`), chosen by quality when encoding
(one of the shipped qualities, `qualities`) and by the quality written in the stream when
decoding, or from an explicit checkpoint file. The progressive codec (`layered`) is the
shipped progressive coder with the shipped cwic model it was fitted on; its streams decode
from any prefix that ends at a layer boundary. `describe` reads only the container, so it
needs neither torch nor weights.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coolchic.amortized import checkpoints, registry
from coolchic.amortized.codec import MAX_PIXELS, image8, read_stream, rgb8  # noqa: F401 (re-exported)
from coolchic.bitstream import BitstreamError, CodecId, peek_codec, read_bitstream


def image_codecs() -> tuple[str, ...]:
    """Names of the amortized image codecs (registry entries with a codec id)."""
    return tuple(entry.name for entry in registry.MODELS if entry.codec_id is not None)


def qualities(codec: str) -> tuple[int, ...]:
    """The shipped operating points of an image codec: its qualities, ascending (for the
    progressive codec: those of its shipped coders)."""
    if codec not in image_codecs():
        raise ValueError(f"unknown amortized codec {codec!r}; expected one of {', '.join(image_codecs())}")
    return checkpoints.qualities(codec)


@dataclass(frozen=True)
class AmortizedReport:
    codec: str  # registry name
    quality: int  # the weights' nominal quality, written in the stream
    checkpoint: str  # file the weights came from
    height: int
    width: int
    n_bytes: int  # whole bitstream
    bpp: float  # from the whole bitstream's size
    psnr_db: float  # of the decoded image against the input (8-bit, its channels)
    encode_seconds: float
    layer_ends: tuple[int, ...] = ()  # progressive: bytes of the prefix of the first k layers


@dataclass(frozen=True)
class AmortizedResult:
    data: bytes  # the bitstream
    reconstruction: np.ndarray  # exactly what `decode(data)` gives, uint8 (H, W, C) as the input
    report: AmortizedReport


def _model(name: str, *, quality: float | None, checkpoint: str | os.PathLike | None):
    """The codec object of `name` (weights of `checkpoint`, else shipped of `quality`) and
    the file its weights came from."""
    if checkpoint is not None:
        model, path = checkpoints.load(checkpoint, name=name), Path(checkpoint)
    else:
        model = checkpoints.load_shipped(name, quality=quality)
        path = checkpoints.shipped_path(name, quality=model.quality)
    if name != "progressive":
        return model, path
    from coolchic.amortized.layered import LayeredCodec

    if model.source_crc is None:
        raise ValueError(f"the progressive coder {path.name} was not fitted on a cwic model's codes")
    return LayeredCodec(model, checkpoints.load_shipped_by_crc("cwic", model.source_crc)), path


def encode(image: np.ndarray | str | os.PathLike, *, codec: str, quality: float | None = None,
           checkpoint: str | os.PathLike | None = None) -> AmortizedResult:
    """Encode an image (uint8 RGB or gray array, or path) with amortized codec `codec`; a
    gray image decodes to a gray image.

    Args:
        codec: one of `image_codecs()`.
        quality: one of `qualities(codec)`, the shipped operating points (default: the
            one nearest 50); not with `checkpoint`.
        checkpoint: a `model.pt` of `coolchic amortized train` (for progressive: of
            `coolchic amortized progressive-fit`, its cwic model shipped) to use instead.

    Raises:
        ValueError: unknown codec, a quality that is not shipped, bad image, missing
            checkpoint (one line each).
    """
    if codec not in image_codecs():
        raise ValueError(f"unknown amortized codec {codec!r}; expected one of {', '.join(image_codecs())}")
    if quality is not None and checkpoint is not None:
        raise ValueError("give --quality or --checkpoint, not both: a checkpoint has its own quality")
    array = image8(image, codec)
    start = time.perf_counter()
    model, path = _model(codec, quality=quality, checkpoint=checkpoint)
    data = model.compress(array)
    reconstruction = model.reconstruct(array)
    seconds = time.perf_counter() - start
    from coolchic.metrics import psnr_images

    h, w = array.shape[:2]
    ends = ()
    if codec == "progressive":
        from coolchic.amortized.layered import read

        ends = read(data).ends
    report = AmortizedReport(codec=codec, quality=model.quality, checkpoint=str(path), height=h,
                             width=w, n_bytes=len(data), bpp=8.0 * len(data) / (h * w),
                             psnr_db=psnr_images(array, reconstruction, 8), encode_seconds=seconds,
                             layer_ends=ends)
    return AmortizedResult(data, reconstruction, report)


def decode(data: bytes, *, checkpoint: str | os.PathLike | None = None,
           layers: int | None = None) -> np.ndarray:
    """Decode an amortized codec's bitstream to uint8 (H, W, C), C the header's channels.

    A progressive stream may be a prefix of one that ends at a layer boundary.

    Args:
        checkpoint: the weights to decode with; by default the shipped checkpoint of the
            stream's model and quality.
        layers: progressive streams only: decode the first `layers` layers [all it holds].

    Raises:
        BitstreamError: an invalid stream, or weights other than the ones that wrote it.
        ValueError: the weights are missing, or `layers` for another codec (one line).
    """
    if peek_codec(data) == CodecId.PROGRESSIVE:
        from coolchic.amortized.layered import read

        stream = read(data, layers=layers)
        name, quality, header = "progressive", stream.quality, stream.header
    else:
        if layers is not None:
            raise ValueError("only progressive streams (--codec progressive) decode a number of layers")
        stream = read_stream(data)
        name, quality, header = stream.entry.name, stream.quality, stream.header
    if header.height * header.width > MAX_PIXELS:
        raise BitstreamError(f"a {header.width}x{header.height} image exceeds the amortized "
                             f"decoders' limit of {MAX_PIXELS} pixels")
    model, _ = _model(name, quality=quality, checkpoint=checkpoint)
    if name == "progressive":
        return model.decompress(data, layers=layers)
    return model.decompress(data)


@dataclass(frozen=True)
class AmortizedInfo:
    """What `coolchic info` shows for an amortized stream."""

    entry: registry.ModelEntry
    height: int
    width: int
    channels: int
    quality: int
    model_crc: int
    section_bytes: dict[str, int]
    total_bytes: int
    legacy: bool  # the first payload layout (read upgraded)
    layer_ends: tuple[int, ...] = ()  # progressive: bytes of the prefix of the first k layers
    layer_count: int = 0  # progressive: layers the encoder wrote

    @property
    def bpp(self) -> float:
        return 8.0 * self.total_bytes / (self.height * self.width)


def describe(data: bytes) -> AmortizedInfo:
    """The container fields of an amortized stream (or of a progressive prefix), without
    weights or decoding.

    Raises:
        BitstreamError: not a valid amortized stream.
    """
    if peek_codec(data) == CodecId.PROGRESSIVE:
        from coolchic.amortized.layered import read

        s = read(data)
        sizes = {"LATENTS": sum(len(layer) + 4 for layer in s.layers)}  # of the layers held
        return AmortizedInfo(registry.get("progressive"), s.header.height, s.header.width,
                             s.header.channels, s.quality, s.model_crc, sizes, len(data), False,
                             s.ends, s.layer_count)
    stream = read_stream(data)
    _, sections = read_bitstream(data)
    return AmortizedInfo(stream.entry, stream.header.height, stream.header.width,
                         stream.header.channels, stream.quality, stream.model_crc,
                         {k.name: len(v) for k, v in sections.items()}, len(data), stream.legacy)
