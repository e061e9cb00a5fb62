"""System (d) applied to the binary codes of system (a): progressive coding of CWIC bits.

The bits of a `cwic.Cwic` encoder, (n, h, w), are ordered by importance: the importance map
of Li et al. (CVPR 2018) keeps the first (level + 1) * n / L channels of a position, so no
channel is ever kept without all the channels before it. Cutting the n channels into N
layers of K (layer l = channels [l K, (l + 1) K)) gives the layered code of Johnston et al.
(arXiv 1703.10114): the progressive coder (d) codes the first k layers without reading the
later ones, and cwic's decoder, given those k layers and the others trimmed (z = 0, as for
bits the importance map drops), gives an image that every further layer refines.

* `layered_code`: all n bits of the binarizer (the importance map is not applied: every bit
  is coded, the map's ordering is what the layers use);
* `training_codes` and `fit_codes`: fit (d) on random crops of the codes of whole training
  images; the coder keeps the CRC of the cwic model whose codes it learnt (`check_pair`);
* `image_report`: for k = 1..N, the real bytes of `progressive.compress` of the first k
  layers, the exact round trip, and the PSNR (8-bit RGB) of cwic's decoder from those
  layers; beside them, the real bytes cwic's own context model (3-D zig-zag order, every
  bit coded) spends on the same full code, and cwic's own stream (its importance map on
  when the model uses it).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coolchic.amortized.codec import rgb8
from coolchic.amortized.codes import Alphabet, encode_codes
from coolchic.amortized.cwic import Cwic
from coolchic.amortized.progressive import (
    ProgressiveConfig,
    ProgressiveModel,
    build_model,
    compress,
    cross_entropy,
    decompress,
    integer_net,
)
from coolchic.metrics import mean_psnr, psnr_images

DEFAULT_LAYER_DEPTH = 8  # K: 4 layers of the 32 bits of the default cwic model
DEFAULT_HIDDEN = (8,)  # as cwic's own bit context model (CwicConfig.context_hidden)
LOSS_WINDOW = 100  # steps whose mean training loss `fit_codes` reports


def layered_config(cwic: Cwic, *, layer_depth: int = DEFAULT_LAYER_DEPTH,
                   hidden: Sequence[int] = DEFAULT_HIDDEN, kernel_size: int = 3) -> ProgressiveConfig:
    """The (d) configuration for the codes of `cwic`: layers of `layer_depth` channels.

    Raises:
        ValueError: layer_depth does not divide the model's code channels.
    """
    n = cwic.config.code_channels
    if layer_depth < 1 or n % layer_depth:
        raise ValueError(f"layer_depth must divide the cwic model's {n} code channels, got {layer_depth}")
    return ProgressiveConfig(layer_depth=layer_depth, layer_count=n // layer_depth,
                             hidden=tuple(hidden), kernel_size=kernel_size)


def layered_code(cwic: Cwic, image: np.ndarray) -> np.ndarray:
    """uint8 (n, ceil(H/8), ceil(W/8)) bits of cwic's binarizer for a uint8 (H, W, 3) image."""
    bits, _ = cwic._codes(image)  # the encoder's bits; the levels only decide trimming
    return bits


def check_pair(coder: ProgressiveModel, cwic: Cwic) -> None:
    """Refuse a coder fitted on the codes of another cwic model (or on none).

    Raises:
        ValueError: other code channels, or another model's CRC (one line).
    """
    n = cwic.config.code_channels
    if coder.config.channels != n:
        raise ValueError(f"the progressive coder codes {coder.config.channels} channels; the cwic "
                         f"model has {n}")
    crc = cwic.model_crc()
    if coder.source_crc != crc:
        fitted = "no cwic model" if coder.source_crc is None else f"cwic model {coder.source_crc:08x}"
        raise ValueError(f"the progressive coder was fitted on the codes of {fitted}, not of this "
                         f"cwic model {crc:08x}; fit one with 'coolchic amortized progressive-fit'")


def training_codes(cwic: Cwic, files: Sequence[str | os.PathLike], *,
                   callback: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """uint8 (n, h, w) layered codes of whole images.

    Args:
        files: 8-bit image files.
        callback: called with (images done, images in all) after every image.
    """
    codes = []
    for i, path in enumerate(files, 1):
        codes.append(layered_code(cwic, rgb8(path, "cwic")))
        if callback is not None:
            callback(i, len(files))
    return codes


@dataclass(frozen=True)
class FitResult:
    model: ProgressiveModel  # the fitted coder, its source_crc set, in eval mode
    loss: float  # mean training loss of the last LOSS_WINDOW steps, bits per coded bit
    steps: int
    seconds: float  # fitting only (not the codes)


def fit_codes(codes: Sequence[np.ndarray], config: ProgressiveConfig, *, source_crc: int, steps: int,
              batch: int = 16, crop: int = 32, lr: float = 5e-3, seed: int = 0,
              callback: Callable[[int, float], None] | None = None) -> FitResult:
    """Fit (d) by Adam on random crops of layered codes, minimising bits per coded bit.

    Args:
        codes: uint8 (C, h, w) codes (sizes may differ), C = config.channels.
        source_crc: CRC of the model that made the codes, kept with the coder.
        steps: optimizer steps.
        batch: crops per step.
        crop: crop side in code positions (8 pixels each); every code must be this large.
        seed: model initialisation and crop sampling.
        callback: called with (step, bits per coded bit of the batch) after every step.

    Raises:
        ValueError: no codes, codes of the wrong channels or smaller than the crop, or a
            non-positive steps, batch, crop or lr.
    """
    if steps < 1 or batch < 1 or crop < 1 or not lr > 0:
        raise ValueError("steps, batch, crop and lr must be positive")
    if not codes:
        raise ValueError("no codes to fit on")
    for code in codes:
        if code.ndim != 3 or code.shape[0] != config.channels:
            raise ValueError(f"codes must be ({config.channels}, h, w), got {code.shape}")
        if min(code.shape[1:]) < crop:
            raise ValueError(f"a {code.shape[1]}x{code.shape[2]} code is smaller than the crop of "
                             f"{crop} code positions ({8 * crop} pixels)")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = build_model(config)
    model.source_crc = int(source_crc)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        crops = []
        for i in rng.integers(len(codes), size=batch):
            _, h, w = codes[i].shape
            y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            crops.append(codes[i][:, y : y + crop, x : x + crop])
        bits = torch.from_numpy(np.stack(crops).astype(np.float32))  # (batch, C, crop, crop)
        optimizer.zero_grad()
        loss = cross_entropy(model, config, bits)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
    model.eval()
    return FitResult(model, float(np.mean(losses[-LOSS_WINDOW:])), steps, time.perf_counter() - start)


def save(model: ProgressiveModel, path: str | os.PathLike) -> Path:
    """Write a fitted coder as a ``model.pt`` that `checkpoints.load` and `checkpoints.ship`
    read (every config field, the source CRC as an attribute)."""
    path = Path(path)
    body = {"model": "progressive", "config": dataclasses.asdict(model.config),
            "state": model.state_dict(), "attributes": {"source_crc": model.source_crc}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(body, tmp)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class ImageReport:
    """(d) on the layered code of one image, k = 1..N coded layers, and cwic's own coding."""

    name: str
    height: int  # pixels
    width: int
    layer_bits: int  # bits of one layer, K h w
    n_bytes: tuple[int, ...]  # k-th: `progressive.compress` of the first k layers, header included
    psnr_db: tuple[float, ...]  # k-th: cwic's decoder from the first k layers, others trimmed
    round_trip: bool  # for every k, decompress gave the first k layers exactly and zeros after
    cwic_context_bytes: int  # cwic's bit context model coding all n bits (symbol stream only)
    cwic_stream_bytes: int  # cwic.compress: the whole stream (map included when the model uses it)
    cwic_psnr_db: float  # of the image cwic's own stream decodes to
    seconds: float

    @property
    def layer_count(self) -> int:
        return len(self.n_bytes)

    def coded_bits(self, k: int) -> int:
        return k * self.layer_bits

    def bits_per_bit(self, k: int) -> float:
        """Real bits of the first k layers' stream per coded bit (1.0: raw)."""
        return 8 * self.n_bytes[k - 1] / self.coded_bits(k)

    def bpp(self, k: int) -> float:
        return 8 * self.n_bytes[k - 1] / (self.height * self.width)

    @property
    def cwic_context_bits_per_bit(self) -> float:
        return 8 * self.cwic_context_bytes / self.coded_bits(self.layer_count)

    @property
    def cwic_bpp(self) -> float:
        return 8 * self.cwic_stream_bytes / (self.height * self.width)


def image_report(coder: ProgressiveModel, cwic: Cwic, image: np.ndarray, *, name: str = "") -> ImageReport:
    """Code the layered code of a uint8 (H, W, 3) image with (d), k = 1..N layers, decode each
    stream, and decode the image from the decoded layers.

    Raises:
        ValueError: a coder fitted on another cwic model, or not an 8-bit RGB image.
    """
    check_pair(coder, cwic)
    start = time.perf_counter()
    height, width = image.shape[:2]
    bits = layered_code(cwic, image)  # (n, h, w)
    net, depth = integer_net(coder), coder.config.layer_depth
    n_bytes, psnrs, exact = [], [], True
    for k in range(1, coder.config.layer_count + 1):
        config = dataclasses.replace(coder.config, coded_layer_count=k)
        data = compress(net, config, bits)
        decoded = decompress(net, config, data)
        exact &= np.array_equal(decoded[: k * depth], bits[: k * depth]) and not decoded[k * depth :].any()
        kept = np.zeros(bits.shape, dtype=bool)
        kept[: k * depth] = True
        psnrs.append(psnr_images(image, cwic._synthesize(decoded, kept, height, width), 8))
        n_bytes.append(len(data))
    bit_net, _ = cwic.integer_nets()
    cwic_context = encode_codes(bit_net, Alphabet.binary(), bits.astype(np.int64))
    stream = cwic.compress(image)
    return ImageReport(
        name=name, height=height, width=width, layer_bits=depth * bits.shape[1] * bits.shape[2],
        n_bytes=tuple(n_bytes), psnr_db=tuple(psnrs), round_trip=bool(exact),
        cwic_context_bytes=len(cwic_context), cwic_stream_bytes=len(stream),
        cwic_psnr_db=psnr_images(image, cwic.reconstruct(image), 8),
        seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class Means:
    """Means over images of the per-image values of `ImageReport` (PSNR: `mean_psnr`)."""

    bits_per_bit: tuple[float, ...]  # k = 1..N
    bpp: tuple[float, ...]
    psnr_db: tuple[float, ...]
    cwic_context_bits_per_bit: float
    cwic_bpp: float
    cwic_psnr_db: float


def means(reports: Sequence[ImageReport]) -> Means:
    """Per-image means of reports with one layer count.

    Raises:
        ValueError: no reports, or layer counts that differ.
    """
    if not reports or len({r.layer_count for r in reports}) != 1:
        raise ValueError("means need at least one report, all with one layer count")
    ks = range(1, reports[0].layer_count + 1)
    mean = lambda values: float(np.mean(list(values)))  # noqa: E731
    return Means(
        bits_per_bit=tuple(mean(r.bits_per_bit(k) for r in reports) for k in ks),
        bpp=tuple(mean(r.bpp(k) for r in reports) for k in ks),
        psnr_db=tuple(mean_psnr(r.psnr_db[k - 1] for r in reports) for k in ks),
        cwic_context_bits_per_bit=mean(r.cwic_context_bits_per_bit for r in reports),
        cwic_bpp=mean(r.cwic_bpp for r in reports),
        cwic_psnr_db=mean_psnr(r.cwic_psnr_db for r in reports))


def tsv(reports: Sequence[ImageReport]) -> str:
    """One line per image: bytes, bits per bit, bpp and PSNR for each k, then cwic's own."""
    ks = range(1, reports[0].layer_count + 1) if reports else ()
    head = ["image", "height", "width", "layer_bits"]
    for k in ks:
        head += [f"bytes_k{k}", f"bits_per_bit_k{k}", f"bpp_k{k}", f"psnr_db_k{k}"]
    head += ["cwic_context_bytes", "cwic_context_bits_per_bit", "cwic_stream_bytes", "cwic_bpp",
             "cwic_psnr_db", "round_trip", "seconds"]
    lines = ["\t".join(head)]
    for r in reports:
        row = [r.name, str(r.height), str(r.width), str(r.layer_bits)]
        for k in ks:
            row += [str(r.n_bytes[k - 1]), f"{r.bits_per_bit(k):.5f}", f"{r.bpp(k):.5f}",
                    f"{r.psnr_db[k - 1]:.3f}"]
        row += [str(r.cwic_context_bytes), f"{r.cwic_context_bits_per_bit:.5f}",
                str(r.cwic_stream_bytes), f"{r.cwic_bpp:.5f}", f"{r.cwic_psnr_db:.3f}",
                "exact" if r.round_trip else "MISMATCH", f"{r.seconds:.2f}"]
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"
