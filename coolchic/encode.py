"""Image -> bitstream: overfit the model, integerize it, entropy-code it, write it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from coolchic import checkpoint
from coolchic.bitstream import CodecId, Header, SectionId, write_bitstream
from coolchic.complexity import mac_per_pixel
from coolchic.config import (
    AUTO_ARCH,
    BEST_ARCH,
    RACE_ARCH,
    RACE_FRACTION,
    DecoderConfig,
    LatentConfig,
    auto_arch,
    best_candidates,
    check_arch_name,
    get_arch,
    grid_shapes,
    race_candidates,
)
from coolchic.decoder.api import DECODER_MAX_PIXELS
from coolchic.decoder.dispatch import check_device, synthesize
from coolchic.entropy.fixedpoint import IntegerArm
from coolchic.entropy.latents import encode_latents, make_schedule
from coolchic.io import read_image
from coolchic.metrics import psnr_images
from coolchic.model.coolchic import CoolChic
from coolchic.payload import pack_config, pack_weights
from coolchic.presets import DEFAULT_PRESET, Preset, get_preset
from coolchic.quant import QuantizedModel, integerize, make_quantizer
from coolchic.train import CompileMode, ProgressCallback, overfit, rd_loss


@dataclass(frozen=True)
class EncodeReport:
    height: int
    width: int
    channels: int
    bit_depth: int
    lmbda: float
    preset: str
    arch: str
    iterations: int
    n_bytes: int  # whole bitstream
    section_bytes: dict[str, int]
    bpp: float  # from the whole bitstream's size
    psnr_db: float  # of the decoded image against the input (RGB PSNR)
    encode_seconds: float  # wall time, that of the runs a stop interrupted included (resume)
    mac_per_pixel: float


@dataclass(frozen=True)
class EncodeResult:
    data: bytes  # the bitstream
    reconstruction: np.ndarray  # exactly what `decode(data)` returns
    report: EncodeReport


def effective_config(config: DecoderConfig, height: int, width: int) -> DecoderConfig:
    """Fewer grids for small images: no grid coarser than 1x1 at both sides."""
    n_max = 1 + int(math.floor(math.log2(max(1, min(height, width)))))
    if config.latents.n_grids <= n_max:
        return config
    return replace(config, latents=LatentConfig(n_grids=n_max))


def image_array(image: np.ndarray | str | Path) -> tuple[np.ndarray, int]:
    """(H, W, C) uint8 or uint16 array and its bit depth, from a path or an array (checked)."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    array = np.asarray(image)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image arrays must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or min(array.shape[:2]) < 1:
        raise ValueError(f"image arrays must be (H, W), (H, W, 1) or (H, W, 3), got {array.shape}")
    return array, 8 if array.dtype == np.uint8 else 16


def image_tensor(array: np.ndarray, bit_depth: int) -> torch.Tensor:
    """(H, W, C) integer image -> (1, C, H, W) float32 on [0, 1], as training sees it."""
    x = torch.from_numpy(array.astype(np.float32) / ((1 << bit_depth) - 1))
    return x.permute(2, 0, 1)[None].contiguous()  # (1, C, H, W)


def _offset(callback: ProgressCallback | None, done: int, total: int) -> ProgressCallback | None:
    """The callback of a training that starts after `done` iterations of `total` in all."""
    if callback is None:
        return None
    return lambda p: callback(replace(p, iteration=done + p.iteration, total=total))


def _saves(resume: Path | None, label: str, used: list[Path]) -> Path | None:
    """The training-state file of one training of an encode that saves to `resume` (each
    training its own file, named after `label`), recorded in `used`."""
    if resume is None:
        return None
    path = resume.with_name(f"{resume.name}.{label}")
    used.append(path)
    return path


def _race(x: torch.Tensor, names: tuple[str, ...], recipe: Preset, lmbda: float, h: int, w: int,
          callback: ProgressCallback | None, resume: Path | None, used: list[Path],
          **train) -> tuple[str, int]:
    """The decoder of `names` whose model, trained for RACE_FRACTION of `recipe`, has the
    lowest true RD cost (rounded latents, float weights); and the iterations spent."""
    short = recipe.scaled_to(max(1, round(recipe.iterations * RACE_FRACTION)))
    total = len(names) * short.iterations + recipe.iterations
    costs = []
    for k, name in enumerate(names):
        model = overfit(x, effective_config(get_arch(name), h, w), short, lmbda,
                        callback=_offset(callback, k * short.iterations, total),
                        resume=_saves(resume, f"race-{name}", used), **train)
        with torch.no_grad():
            costs.append(rd_loss(model, x.to(train["device"]), lmbda, make_quantizer("round"))[0].item())
    return names[costs.index(min(costs))], len(names) * short.iterations


def model_sections(q: QuantizedModel, header: Header) -> list[tuple[SectionId, bytes]]:
    """The COOL-CHIC sections of a quantized model, in bitstream order."""
    shapes = grid_shapes(header.height, header.width, q.config.latents.n_grids)
    schedule = make_schedule(shapes, q.config.arm.context)
    return [
        (SectionId.CONFIG, pack_config(q.config)),
        (SectionId.WEIGHTS, pack_weights(q.weights, q.config, header.channels)),
        (SectionId.LATENTS, encode_latents(schedule, list(q.grids), IntegerArm(q.weights.arm))),
    ]


@dataclass(frozen=True)
class CodedModel:
    """A trained model as a bitstream, and what the encoder reports of it."""

    model: CoolChic  # the float model it was coded from
    data: bytes
    reconstruction: np.ndarray  # exactly what `decode(data)` returns
    sections: list[tuple[SectionId, bytes]]
    bit_depth: int
    psnr_db: float
    cost: float  # true RD cost: MSE on [0, 1] of the decoded image + lambda * bpp of the file


def code_model(model: CoolChic, array: np.ndarray, *, bit_depth: int, lmbda: float,
               refine_trials: int) -> CodedModel:
    """Integerize a trained model of `array` ((H, W, C) uint8/16), entropy-code it and
    write the bitstream; the reconstruction is the decoder's own
    (``coolchic.decoder.dispatch.synthesize``)."""
    h, w, c = array.shape
    header = Header(codec_id=CodecId.COOLCHIC, height=h, width=w, channels=c, bit_depth=bit_depth)
    q = integerize(model, array, bit_depth=bit_depth, lmbda=lmbda, refine_trials=refine_trials)
    sections = model_sections(q, header)
    data = write_bitstream(header, sections)
    reconstruction = synthesize(q.grids, q.weights.mlp, q.weights.residual, bit_depth=bit_depth,
                                taps=q.weights.taps)
    psnr = psnr_images(array, reconstruction, bit_depth)
    cost = 10.0 ** (-psnr / 10.0) + lmbda * 8.0 * len(data) / (h * w)  # MSE on [0, 1] + lambda bpp
    return CodedModel(model, data, reconstruction, sections, bit_depth, psnr, cost)


def encode_report(coded: CodedModel, *, lmbda: float, preset: str, arch: str, iterations: int,
                  seconds: float) -> EncodeReport:
    h, w, c = coded.model.height, coded.model.width, coded.model.channels
    return EncodeReport(
        height=h, width=w, channels=c, bit_depth=coded.bit_depth, lmbda=float(lmbda), preset=preset,
        arch=arch, iterations=iterations, n_bytes=len(coded.data),
        section_bytes={sid.name: len(payload) for sid, payload in coded.sections},
        bpp=8.0 * len(coded.data) / (h * w), psnr_db=coded.psnr_db, encode_seconds=seconds,
        mac_per_pixel=mac_per_pixel(coded.model.config, h, w, c).total,
    )


def encode(
    image: np.ndarray | str | Path,
    *,
    lmbda: float,
    preset: str | Preset = DEFAULT_PRESET,
    iterations: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    arch: str | DecoderConfig | None = None,
    callback: ProgressCallback | None = None,
    threads: int | None = None,
    compile: CompileMode = "auto",
    resume: str | Path | None = None,
) -> EncodeResult:
    """Encode an image (array or path) at rate-distortion trade-off `lmbda`.

    Args:
        lmbda: weight of the rate (bits per pixel) against the MSE on [0, 1]; > 0.
        preset: training recipe name (coolchic.presets.PRESETS), or a Preset of one's own.
        iterations: total training iterations, overriding the preset's (phases scaled).
        device: 'cpu' or 'cuda' for training.
        arch: decoder configuration name (coolchic.config.ARCHS); "auto" (None): the
            one `coolchic.config.auto_arch` picks for this image size and lambda; "best":
            encode with each of `coolchic.config.best_candidates` and keep the one of
            lowest true RD cost (up to twice the time); "race": train each of
            `coolchic.config.race_candidates` for a tenth of the iterations and encode with
            the one of lowest true RD cost (up to 1.2 times the time); or a DecoderConfig
            of one's own (reported as "custom").
        callback: called after every training iteration with a Progress record.
        threads: training threads (None: this machine's cores, or OMP_NUM_THREADS; at
            most 4); the native kernels give the same bitstream for any count. See
            `coolchic.train.overfit`.
        compile: compiled training kernels: "auto" or "on" (native C++ kernels on the
            CPU, built with the system compiler; else torch.compile), or "off".
        resume: a file path prefix for the training state (``coolchic.checkpoint``): each
            training of the encode saves its state to PREFIX.NAME every minute, and goes on
            from a save of its own found there (same image, lambda, recipe, decoder,
            seed, device and kernels: the same bitstream as an encode never stopped). The
            files are removed once the bitstream is made.
    """
    if not (isinstance(lmbda, (int, float)) and math.isfinite(lmbda) and lmbda > 0):
        raise ValueError(f"lambda must be a finite number > 0, got {lmbda}")
    recipe = preset if isinstance(preset, Preset) else get_preset(preset)
    if iterations is not None:
        recipe = recipe.scaled_to(iterations)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not isinstance(arch, DecoderConfig):
        check_arch_name(arch or AUTO_ARCH)
    check_device(device)
    array, bit_depth = image_array(image)
    h, w, c = array.shape
    if h * w > DECODER_MAX_PIXELS:
        raise ValueError(f"images above {DECODER_MAX_PIXELS} pixels are not supported ({w}x{h})")
    start = time.perf_counter()
    x = image_tensor(array, bit_depth)
    train = {"seed": seed, "device": device, "threads": threads, "compile": compile}
    raced = 0  # iterations spent by a race
    resume, used = (None if resume is None else Path(resume)), []
    earlier = 0.0  # seconds that stopped runs of this encode spent training
    if isinstance(arch, DecoderConfig):
        candidates = [("custom", arch)]
    elif arch == BEST_ARCH:
        candidates = [(name, get_arch(name)) for name in best_candidates(lmbda, h, w)]
    elif arch == RACE_ARCH:
        names = race_candidates(lmbda, h, w)
        name, raced = (names[0], 0) if len(names) == 1 else _race(x, names, recipe, lmbda, h, w,
                                                                   callback, resume, used, **train)
        candidates = [(name, get_arch(name))]
    else:
        name = auto_arch(lmbda, h, w) if arch in (None, AUTO_ARCH) else arch
        candidates = [(name, get_arch(name))]

    total = raced + len(candidates) * recipe.iterations
    best = None
    for k, (name, config) in enumerate(candidates):
        config = effective_config(config, h, w)
        progress = _offset(callback, raced + k * recipe.iterations, total)
        saves = _saves(resume, name, used)
        began = time.perf_counter()
        model = overfit(x, config, recipe, lmbda, callback=progress, resume=saves, **train).cpu()
        if saves is not None:  # the training time of earlier processes, when it was resumed
            earlier += max(0.0, checkpoint.saved_seconds(saves) - (time.perf_counter() - began))
        coded = code_model(model, array, bit_depth=bit_depth, lmbda=lmbda, refine_trials=recipe.refine_trials)
        if best is None or coded.cost < best[0].cost:
            best = (coded, name)
    coded, arch_name = best
    for path in used:
        path.unlink(missing_ok=True)
    return EncodeResult(coded.data, coded.reconstruction,
                        encode_report(coded, lmbda=lmbda, preset=recipe.name, arch=arch_name,
                                      iterations=total, seconds=earlier + time.perf_counter() - start))
