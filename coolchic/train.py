"""Training = encoding: overfit one image's COOL-CHIC model by minimizing D + lambda * R,
D the MSE on [0, 1] and R the latent rate in bits per pixel (Ladune et al., ICCV 2023)."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from coolchic import checkpoint as ckpt
from coolchic.config import DecoderConfig
from coolchic.model import native
from coolchic.model.coolchic import CoolChic
from coolchic.model.fused import EAGER, Kernels, compiled_kernels, native_kernels
from coolchic.presets import Phase, Preset
from coolchic.quant import make_quantizer
from coolchic.soap import Soap


@dataclass(frozen=True)
class Progress:
    """What a training callback receives after each iteration."""

    iteration: int  # 1-based, over all phases
    total: int
    phase: int
    loss: float
    psnr_db: float  # of the training proxy's reconstruction
    bpp: float  # estimated latent rate of the training proxy
    best_loss: float  # best true (rounded-latent) RD cost so far


ProgressCallback = Callable[[Progress], None]


def lr_factor(phase: Phase, step: int) -> float:
    """The factor of the phase's learning rates at its `step`-th optimizer step (0-based)."""
    if phase.schedule == "constant":
        return 1.0
    if phase.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(1, phase.iterations)))
    raise ValueError(f"unknown schedule {phase.schedule!r}; choose cosine or constant")


def softround_settings(phase: Phase, step: int) -> tuple[float, float]:
    """(temperature, noise parameter) of a softround phase at `step` (the parameter is the
    Kumaraswamy shape a or the Gaussian standard deviation, `phase.noise`), each
    interpolated linearly from its start to its end value over the phase."""
    t = step / max(1, phase.iterations - 1)
    (t0, t1), (a0, a1) = phase.temperature, phase.noise_shape
    return t0 + (t1 - t0) * t, a0 + (a1 - a0) * t


def _phase_quantizer(phase: Phase, step: int):
    """The phase's quantizer at `step` (softround: with `softround_settings`)."""
    if phase.quantizer != "softround":
        return make_quantizer(phase.quantizer)
    temperature, shape = softround_settings(phase, step)
    return make_quantizer("softround", temperature=temperature, noise_shape=shape, noise=phase.noise)


def rd_loss(
    model: CoolChic, image: torch.Tensor, lmbda: float, quantize, *, kernels: Kernels = EAGER
) -> tuple[torch.Tensor, float, float]:
    """(loss, mse, bpp) of one forward pass; image is (1, C, H, W) in [0, 1]."""
    loss, mse, bpp = _rd_terms(model, image, lmbda, quantize, kernels)
    return loss, float(mse.detach()), float(bpp.detach())


def _rd_terms(model: CoolChic, image: torch.Tensor, lmbda: float, quantize, kernels: Kernels):
    """(loss, mse, bpp) as tensors: no device synchronization."""
    mse, rate = model.loss_terms(quantize, image, kernels=kernels)
    bpp = rate / model.n_pixels()
    return mse + lmbda * bpp, mse, bpp


# On the CPU the native kernels (coolchic/model/kernels.cpp; about a second to build, once
# per machine) run the ARM and the synthesis 2-3x faster than the torch kernels. Without a
# C++ compiler, torch.compile (which needs one too) is tried, else the torch kernels run.
# torch.compile of the torch ARM band kernel, measured on the reference 2-core CPU: 5 s
# (warm inductor cache) to 16 s (cold) to compile, then about 12 ms less per iteration at
# 768x512 (about 10%, 25 ns per latent) and nothing measurable at 256x256. "auto" compiles
# when the run is long enough to win a cold compilation back about twice over.
COMPILE_MIN_LATENT_ITERATIONS = 1.2e9
CompileMode = Literal["auto", "on", "off"]
COMPILE_MODES: tuple[str, ...] = ("auto", "on", "off")


def training_kernels(mode: CompileMode, model: CoolChic, iterations: int, device: str) -> Kernels:
    """The kernels that train `model` for `iterations` on `device` ("off": the torch
    kernels; "auto" and "on": the native ones on the CPU, else torch.compile, "auto" only
    for long runs)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
    if mode != "off" and device == "cpu":
        kernels = native_kernels()
        if kernels is not None:
            return kernels
        warnings.warn(f"native training kernels unavailable ({native.unavailable_reason()}); "
                      "training with the torch kernels: 2-3x slower, and the bitstream differs from the "
                      "native kernels' one", stacklevel=3)
    wanted = mode == "on" or (mode == "auto" and device == "cpu" and
                              model.n_latents() * iterations >= COMPILE_MIN_LATENT_ITERATIONS)
    if not wanted:
        return EAGER
    try:  # compile now, on a small band, so that a failure shows here
        kernels = compiled_kernels()
        layers = model.arm.layers
        params = [m.weight.detach() for m in layers] + [m.bias.detach() for m in layers]
        x = torch.zeros(model.config.arm.context, 64, device=device)
        kernels.arm_band(x, x[0], torch.ones_like(x[0]), params)
        return kernels
    except Exception as error:  # no C++ compiler, unsupported platform: train eagerly
        warnings.warn(f"torch.compile unavailable ({error}); training without it", stacklevel=3)
        return EAGER


def make_optimizer(phase: Phase, groups: list[dict]) -> torch.optim.Optimizer:
    """The phase's optimizer over `groups` (the latents first: they are never preconditioned)."""
    if phase.optimizer == "soap":
        return Soap([{**groups[0], "precondition": False}, *groups[1:]])
    return adam(groups)


def adam(groups: list[dict]) -> torch.optim.Adam:
    """Adam, fused (one kernel over all parameters) where this torch has it for these
    tensors: on the reference CPU 0.7 ms per step instead of 2.1 ms at 768x512."""
    try:
        return torch.optim.Adam(groups, fused=True)
    except (RuntimeError, ValueError):  # older torch: no fused CPU Adam
        return torch.optim.Adam(groups)


@contextmanager
def training_threads(threads: int | None, kernels: Kernels) -> Iterator[None]:
    """Run with `threads` threads (None: torch's intra-op setting, i.e. this machine's
    cores or OMP_NUM_THREADS) in the native kernels, torch kept to one intra-op thread
    beside them; with the torch kernels, `threads` intra-op threads (None: 1). Restores
    torch's setting afterwards."""
    before = torch.get_num_threads()
    if kernels.native is not None:
        torch_threads, native_threads = 1, before if threads is None else threads
    else:
        torch_threads, native_threads = threads or 1, 1
    torch.set_num_threads(torch_threads)
    try:
        with native.threads(native_threads):
            yield
    finally:
        torch.set_num_threads(before)


def overfit(
    image: torch.Tensor,
    config: DecoderConfig,
    preset: Preset,
    lmbda: float,
    *,
    seed: int = 0,
    device: str = "cpu",
    callback: ProgressCallback | None = None,
    threads: int | None = None,
    compile: CompileMode = "auto",
    resume: Path | None = None,
    resume_every_s: float | None = None,
) -> CoolChic:
    """Train a model of `image` ((1, C, H, W) float in [0, 1]) and return the state with the
    lowest true RD cost (latents rounded) seen at the evaluation points.

    Args:
        threads: threads of the native training kernels (None: torch's intra-op
            setting, i.e. this machine's cores or OMP_NUM_THREADS; at most 4). They split
            their work into fixed parts, so the result does not depend on it; torch runs
            on one thread beside them. With the torch kernels (no compiler, "off",
            CUDA): torch's intra-op threads (None: 1; on the reference 2-core CPU two
            threads were 20% faster when the machine was idle and 4x to 100x slower
            when another process kept a core busy: OpenMP workers waiting for a core).
        compile: compiled training kernels: "auto" and "on" use the native (C++) kernels
            on the CPU, built with the system compiler, else torch.compile of the ARM's
            band kernel ("auto": only when the run is long enough to pay for it); "off"
            runs the torch kernels. Falls back to them when compiling is unavailable.
        resume: a file that holds this training's state (``coolchic.checkpoint``): saved
            to every `resume_every_s` seconds (None: ``checkpoint.DEFAULT_EVERY_S``); when
            it holds a save of this same training, the training goes on from it (and ends
            as a training never stopped would). The caller removes it when done with it.
    """
    torch.manual_seed(seed)
    _, c, h, w = image.shape
    image = image.to(device)
    model = CoolChic(config, h, w, c, synthesis_gain=preset.synthesis_gain).to(device)
    kernels = training_kernels(compile, model, preset.iterations, device)
    saver, state = None, None
    if resume is not None:
        kind = "native" if kernels.native is not None else "eager" if kernels is EAGER else "compiled"
        saver = ckpt.Checkpointer(Path(resume), ckpt.identity(
            image=image, lmbda=lmbda, config=config, preset=preset, seed=seed, device=device,
            kernels=kind), every_s=ckpt.DEFAULT_EVERY_S if resume_every_s is None else resume_every_s)
        state = saver.load()
    with training_threads(threads, kernels):
        run = _Run(image, lmbda, kernels, callback, preset.iterations, saver=saver,
                   earlier_s=0.0 if state is None else float(state.get("elapsed_s", 0.0)))
        warming = state is None or state["stage"] == "warm-up"  # else the warm-up is behind
        if warming and preset.warmup_iterations:
            model = _warm_up(model, run, preset, seed=seed, resume=state)
            state = None
        model = _train(model, run, preset.phases, resume=state)
        if saver is not None and (state is None or state["stage"] != "done"):
            saver.save(run.snapshot(model, stage="done", phase=len(preset.phases), best_loss=0.0,
                                    best_state=None))
        return model


@dataclass
class _Run:
    """What every training stage of one encode shares, and its iteration counter."""

    image: torch.Tensor
    lmbda: float
    kernels: Kernels
    callback: ProgressCallback | None
    total: int
    saver: ckpt.Checkpointer | None = None
    done: int = 0
    context: dict = field(default_factory=dict)  # what the stage adds to a save (warm-up)
    earlier_s: float = 0.0  # wall seconds of the training's earlier runs (a resumed save's)
    started: float = field(default_factory=time.perf_counter)

    def snapshot(self, model: CoolChic, *, stage: str, **train) -> dict:
        """The state a save holds after `self.done` iterations."""
        elapsed = self.earlier_s + time.perf_counter() - self.started
        return {"stage": stage, "done": self.done, "model": model.state_dict(), "elapsed_s": elapsed,
                "rng": ckpt.rng_state(self.image.device.type), **self.context, **train}

    def true_loss(self, model: CoolChic) -> float:
        with torch.no_grad():  # forward only: no gradient is computed
            return float(_rd_terms(model, self.image, self.lmbda, make_quantizer("round"), self.kernels)[0])


def _warm_up(model: CoolChic, run: _Run, preset: Preset, *, seed: int,
             resume: dict | None = None) -> CoolChic:
    """The candidate of lowest true RD cost after a short run of the first phase's recipe
    (`resume`: a save made during the warm-up, gone on from)."""
    first = preset.phases[0]
    phase = replace(first, iterations=preset.warmup.iterations, schedule="constant",
                    eval_every=preset.warmup.iterations)
    best, best_loss = model, float("inf")
    start = 0
    if resume is not None:
        start = resume["candidate"]
        if resume["warm_best"] is not None:
            best = CoolChic(model.config, model.height, model.width, model.channels).to(run.image.device)
            best.load_state_dict(resume["warm_best"])
            best_loss = resume["warm_best_loss"]
    for candidate in range(start, preset.warmup.candidates):
        if candidate:
            torch.manual_seed(seed + 7919 * candidate)  # a fresh initialization per candidate
            model = CoolChic(best.config, best.height, best.width, best.channels,
                             synthesis_gain=preset.synthesis_gain).to(run.image.device)
        run.context = {"candidate": candidate, "warm_best_loss": best_loss,
                       "warm_best": None if best_loss == float("inf") else best.state_dict()}
        _train(model, run, (phase,), resume=resume if candidate == start else None, stage="warm-up")
        loss = run.true_loss(model)
        if loss < best_loss:
            best, best_loss = model, loss
    run.context = {}
    return best


def _train(model: CoolChic, run: _Run, phases: tuple[Phase, ...], *, resume: dict | None = None,
           stage: str = "train") -> CoolChic:
    """Run `phases` on `model` in place; each phase starts from the best state so far, and
    the model ends in the state of lowest true RD cost seen at the evaluation points.
    `resume`: a save made during this run of `phases`, gone on from."""
    best_loss, best_state = float("inf"), None
    first_phase, first_step = 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        run.done = resume["done"]
        best_loss, best_state = resume["best_loss"], resume["best_state"]
        first_phase, first_step = resume.get("phase", len(phases)), resume.get("step", 0)
        ckpt.set_rng_state(resume["rng"], run.image.device.type)
    for phase_index, phase in enumerate(phases):
        if phase_index < first_phase:
            continue
        latents = list(model.latents)
        networks = [p for n, p in model.named_parameters() if not n.startswith("latents.")]
        latent_lr = phase.lr if phase.latent_lr is None else phase.latent_lr
        optimizer = make_optimizer(phase, [{"params": latents, "lr": latent_lr},
                                           {"params": networks, "lr": phase.lr}])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s, p=phase: lr_factor(p, s))
        start = 0
        if resume is not None and phase_index == first_phase:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            start = first_step
        for step in range(start, phase.iterations):
            quantize = _phase_quantizer(phase, step)
            loss, mse, bpp = _rd_terms(model, run.image, run.lmbda, quantize, run.kernels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            run.done += 1
            last = step == phase.iterations - 1
            if (step + 1) % phase.eval_every == 0 or last:
                true_loss = run.true_loss(model)
                if true_loss < best_loss:
                    best_loss, best_state = true_loss, copy.deepcopy(model.state_dict())
            if run.saver is not None and run.saver.due():
                run.saver.save(run.snapshot(
                    model, stage=stage, phase=phase_index, step=step + 1, best_loss=best_loss,
                    best_state=best_state, optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict()))
            if run.callback is not None:  # reading the values synchronizes with the device
                psnr = -10.0 * math.log10(max(float(mse.detach()), 1e-12))
                run.callback(Progress(run.done, run.total, phase_index, float(loss.detach()),
                                      psnr, float(bpp.detach()), best_loss))
        if best_state is not None:  # each phase starts from the best state so far
            model.load_state_dict(best_state)
    return model
