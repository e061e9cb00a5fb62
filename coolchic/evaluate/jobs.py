"""One evaluation job: code one image at one setting with one codec, the real way.

:func:`run_job` is the only place where a measurement is made, for our codec and the
classical ones, on every backend (in process, in a process pool, as a Ray task): encode,
write the bitstream to a file, decode that file, compare with the source. Codecs are
passed in as objects following :class:`Codec`, so tests drive the same path with a fake.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from coolchic.evaluate.datasets import load_image
from coolchic.evaluate.store import Row
from coolchic.io import atomic_write_bytes
from coolchic.metrics import bpp, ms_ssim, mse, psnr_images


@dataclass(frozen=True)
class Encoded:
    """What an encoder hands back: the whole file, and our decoder's MAC/pixel if known."""

    data: bytes
    mac_per_pixel: float | None = None
    seconds: float | None = None  # the encoder's own wall time, when it counts runs that a
    # stop interrupted (a resumed encode); else the job times the call


class Codec(Protocol):
    """What :func:`run_job` needs from a codec (picklable, for process pools and Ray)."""

    name: str  # the ``codec`` column of its rows
    kind: str  # "lambda" (ours: settings are RD lambdas) or "quality" (classical)
    keep_bitstreams: bool  # store the coded files in the run folder

    def encode(self, pixels: np.ndarray, bit_depth: int, setting: float) -> Encoded: ...

    def decode(self, path: Path, height: int, width: int) -> np.ndarray: ...

    def preset(self) -> str: ...

    def revision(self) -> str: ...


@dataclass(frozen=True)
class CoolchicCodec:
    """Our codec through ``coolchic.encode`` / ``coolchic.decode`` (imported when used)."""

    preset_name: str
    iterations: int | None = None  # overrides the preset's total, phases scaled
    device: str = "cpu"
    seed: int = 0
    arch: str | None = None
    kind: str = "lambda"
    keep_bitstreams: bool = True
    resume_dir: str | None = None  # where each encode saves its training state (a stopped
    # run goes on from it when started again); None: no saves

    @property
    def name(self) -> str:
        """``coolchic-<preset>``, plus every non-default setting that changes the results
        (so runs with other settings never share rows)."""
        parts = ["coolchic", self.preset_name]
        if self.iterations is not None:
            parts.append(f"it{self.iterations}")
        if self.arch is not None:
            parts.append(self.arch)
        if self.seed != 0:
            parts.append(f"seed{self.seed}")
        return "-".join(parts)

    def encode(self, pixels: np.ndarray, bit_depth: int, setting: float) -> Encoded:
        from coolchic.encode import encode

        resume = None
        if self.resume_dir is not None:
            digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16]
            resume = Path(self.resume_dir) / f"{self.name}@{digest}@{setting!r}"
        result = encode(pixels, lmbda=setting, preset=self.preset_name,
                        iterations=self.iterations, device=self.device, seed=self.seed,
                        arch=self.arch, resume=resume)
        return Encoded(result.data, float(result.report.mac_per_pixel), result.report.encode_seconds)

    def decode(self, path: Path, height: int, width: int) -> np.ndarray:
        from coolchic.decode import decode

        return decode(path, device=self.device)

    def preset(self) -> str:
        suffix = f" ({self.iterations} iterations)" if self.iterations else ""
        return self.preset_name + suffix

    def revision(self) -> str:
        from coolchic.evaluate.provenance import code_revision

        return code_revision()


@dataclass(frozen=True)
class ClassicalAdapter:
    """A :mod:`coolchic.evaluate.baselines` registry entry seen as a :class:`Codec`."""

    name: str
    version: str = ""  # the tool's version, probed once by the driver
    kind: str = "quality"
    keep_bitstreams: bool = False

    def _entry(self):
        from coolchic.evaluate.baselines import get_codec

        return get_codec(self.name)

    def encode(self, pixels: np.ndarray, bit_depth: int, setting: float) -> Encoded:
        if bit_depth != 8 or pixels.dtype != np.uint8:
            raise ValueError(f"{self.name} is evaluated on 8-bit images only")
        return Encoded(self._entry().encode(pixels, setting))

    def decode(self, path: Path, height: int, width: int) -> np.ndarray:
        return self._entry().decode(path.read_bytes(), height, width)

    def preset(self) -> str:
        return self._entry().settings

    def revision(self) -> str:
        return self.version or self._entry().version()


@dataclass(frozen=True)
class AmortizedAdapter:
    """An amortized codec of :mod:`coolchic.amortized` (shipped weights, chosen by the
    quality setting) seen as a :class:`Codec`; its rows are named ``amortized-<model>``."""

    model: str  # registry name: cwic, ccn, cpm
    kind: str = "quality"
    keep_bitstreams: bool = True

    @property
    def name(self) -> str:
        return f"amortized-{self.model}"

    def encode(self, pixels: np.ndarray, bit_depth: int, setting: float) -> Encoded:
        from coolchic.amortized.api import encode

        if bit_depth != 8 or pixels.dtype != np.uint8:
            raise ValueError(f"{self.name} is evaluated on 8-bit images only")
        return Encoded(encode(pixels, codec=self.model, quality=setting).data)

    def decode(self, path: Path, height: int, width: int) -> np.ndarray:
        from coolchic.amortized.api import decode

        return decode(path.read_bytes())

    def preset(self) -> str:
        return f"shipped weights {self.model}-q<quality>.pt"

    def revision(self) -> str:
        from coolchic.evaluate.provenance import code_revision

        return code_revision()


@dataclass(frozen=True)
class Job:
    """One (codec, image, setting) to measure; cheap to pickle (the image is read by the
    worker, so a Ray cluster needs the image folder at the same path on every node)."""

    codec: str  # Codec.name
    image: str  # image name (file stem)
    path: str  # source image file
    crop: int | None  # centre crop side in pixels, None for the whole image
    setting: float  # lambda (ours) or quality (classical)


@dataclass(frozen=True)
class Outcome:
    row: Row
    bitstream: bytes | None  # the decoded file, when the codec keeps bitstreams


@contextmanager
def _single_thread_torch() -> Iterator[None]:
    """Run MS-SSIM's small convolutions on one thread, then restore the thread count.

    Measured on a busy 2-core machine: 5-scale MS-SSIM of a 256x256 RGB crop took 0.07 s
    on one thread and 0.7-2.7 s on two (OpenMP workers waiting for a core).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_job(job: Job, codec: Codec) -> Outcome:
    """Encode, write the file, decode the file, measure.

    Returns:
        The row (bpp from the file's size; PSNR, MSE and MS-SSIM of the decoded image
        against the cropped source on its own bit depth; wall-clock encode and decode
        seconds) and, for codecs that keep them, the bitstream bytes.

    Raises:
        RuntimeError: the decoded image does not have the source's shape.
    """
    image = load_image(job.path, crop=job.crop)
    height, width = image.pixels.shape[:2]
    start = time.perf_counter()
    encoded = codec.encode(image.pixels, image.bit_depth, job.setting)
    encode_s = time.perf_counter() - start if encoded.seconds is None else encoded.seconds
    with tempfile.TemporaryDirectory(prefix="coolchic-eval-") as tmp:
        path = Path(tmp) / "bitstream.bin"
        atomic_write_bytes(path, encoded.data)
        n_bytes = path.stat().st_size
        start = time.perf_counter()
        decoded = np.asarray(codec.decode(path, height, width))
        decode_s = time.perf_counter() - start
    if decoded.shape != image.pixels.shape:
        raise RuntimeError(
            f"{codec.name} decoded {job.image} to shape {decoded.shape}, "
            f"expected {image.pixels.shape}"
        )
    with _single_thread_torch():
        score = float(ms_ssim(image.pixels, decoded, image.bit_depth))
    row = Row(
        codec=codec.name, image=job.image, width=width, height=height,
        lmbda=float(job.setting) if codec.kind == "lambda" else None,
        quality=float(job.setting) if codec.kind == "quality" else None,
        bytes=n_bytes, bpp=float(bpp(n_bytes, height, width)),
        psnr_db=float(psnr_images(image.pixels, decoded, image.bit_depth)),
        mse=float(mse(image.pixels, decoded)), ms_ssim=score,
        encode_s=encode_s, decode_s=decode_s, mac_per_pixel=encoded.mac_per_pixel,
        preset=codec.preset(), revision=codec.revision(),
    )
    return Outcome(row, encoded.data if codec.keep_bitstreams else None)
