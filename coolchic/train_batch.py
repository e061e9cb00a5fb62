"""Batched training: N encodes of one image size and decoder configuration overfitted
together, one kernel launch per operation for the whole batch (issue 27).

The recipe is ``coolchic.train``'s: the preset's phases, each from the best state so far,
Adam with per-group learning rates under the phase's schedule, the true (rounded-latent) RD
cost evaluated every ``eval_every`` steps and the best state kept. What changes is where
things live. Every per-encode quantity is a device tensor (B, ...): latents, networks, Adam's
moments, lambda, seed, best cost and best state; the schedule (learning rates, Adam's bias
corrections, the softround temperature and noise shape) is computed on the host as plain
numbers, one row per step, uploaded once per phase and indexed on the device by a step
counter. So a training step reads no value back (no ``.item()``, no synchronization) and,
on CUDA, is captured once per quantizer kind as a CUDA graph and replayed.

An encode's result does not depend on its batch (see ``coolchic.model.batched``). On the
CPU torch runs on one thread here: its elementwise loops split across threads at points
that depend on the tensor's size, hence on the batch. This path is not the native CPU one
of ``coolchic.train.overfit``: its bitstreams differ from a single encode's (other float
arithmetic, other noise), and on the CPU it is several times slower per image-iteration
(benchmarks/batched.py); it is meant for GPUs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from coolchic.config import DecoderConfig
from coolchic.model.batched import BatchedCoolChic, hash_uniform, soft_round
from coolchic.model.coolchic import CoolChic
from coolchic.model.softround import gaussian_from_uniform
from coolchic.presets import Phase, Preset
from coolchic.quant import kumaraswamy_b
from coolchic.train import lr_factor, softround_settings

BETAS = (0.9, 0.999)  # Adam's, as torch.optim.Adam's defaults that coolchic.train.adam uses
EPS = 1e-8
_SPARE_ROWS = 4  # schedule rows past a phase's end, read by the CUDA graph's warm-up steps
_COLUMNS = 6  # latent step size, network step size, sqrt(bias correction 2), T, a, b


@dataclass(frozen=True)
class BatchProgress:
    """What a batched training callback receives (one value per encode of the batch)."""

    iteration: int  # 1-based, over all phases
    total: int
    phase: int
    loss: tuple[float, ...]  # of the training proxy at the last step
    psnr_db: tuple[float, ...]  # of the training proxy's reconstruction
    bpp: tuple[float, ...]  # estimated latent rate of the training proxy
    best_loss: tuple[float, ...]  # best true (rounded-latent) RD cost so far; inf before one


BatchCallback = Callable[[BatchProgress], None]


def step_kind(phase: Phase) -> str:
    """The `BatchTrainer.step` kind of a phase: its quantizer, "softround-gaussian" for a
    softround phase with Gaussian noise."""
    if phase.quantizer == "softround" and phase.noise == "gaussian":
        return "softround-gaussian"
    return phase.quantizer


def schedule_rows(phase: Phase) -> list[list[float]]:
    """One row per step of the phase: [latent step size, network step size (both the
    learning rate over Adam's first bias correction), sqrt of the second bias correction,
    softround temperature, Kumaraswamy a, b] (the last three 1.0 outside softround; with
    Gaussian noise, a is its standard deviation and b 1.0)."""
    latent_lr = phase.lr if phase.latent_lr is None else phase.latent_lr
    rows = []
    for step in range(phase.iterations):
        f, k = lr_factor(phase, step), step + 1
        bc1, bc2 = 1.0 - BETAS[0] ** k, 1.0 - BETAS[1] ** k
        t, a = softround_settings(phase, step) if phase.quantizer == "softround" else (1.0, 1.0)
        b = kumaraswamy_b(a) if phase.noise == "kumaraswamy" else 1.0  # gaussian: a is the std
        rows.append([latent_lr * f / bc1, phase.lr * f / bc1, math.sqrt(bc2), t, a, b])
    return rows


class BatchTrainer:
    """The training state of one batch on one device, and its step."""

    def __init__(self, model: BatchedCoolChic, images: torch.Tensor, lmbdas: Sequence[float],
                 seeds: Sequence[int], *, longest_phase: int, graphs: bool = True):
        self.model = model
        device = model.latents.device
        self.image = images.to(device=device, dtype=torch.float32)  # (B, C, H, W) on [0, 1]
        self.lmbdas = torch.tensor(lmbdas, dtype=torch.float32, device=device)
        self.seeds = torch.tensor(seeds, dtype=torch.int64, device=device)[:, None]
        self.index = torch.arange(model.latents.shape[1], device=device)
        self.n_pixels = model.height * model.width
        lat, net = model.latents, model.networks
        self.moments = [torch.zeros_like(t) for t in (lat, lat, net, net)]
        self.counter = torch.zeros((), dtype=torch.int64, device=device)  # steps so far: the noise
        self.phase_step = torch.zeros(1, dtype=torch.int64, device=device)
        self.table = torch.ones(longest_phase + _SPARE_ROWS, _COLUMNS, device=device)
        self.last = torch.zeros(3, model.batch, device=device)  # loss, mse, rate of the last step
        self.best_loss = torch.full((model.batch,), math.inf, device=device)
        self.best = [lat.detach().clone(), net.detach().clone()]
        self.use_graphs = graphs and device.type == "cuda"
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}

    def start_phase(self, phase: Phase) -> None:
        """Fresh Adam state (a new optimizer per phase, as coolchic.train) and the
        phase's schedule, written in place (a captured graph reads these tensors)."""
        rows = schedule_rows(phase)
        rows += [rows[-1]] * _SPARE_ROWS
        table = torch.tensor(rows, dtype=torch.float32)
        if self.table.is_cuda:
            table = table.pin_memory()
        self.table[: len(rows)].copy_(table, non_blocking=True)
        for t in self.moments:
            t.zero_()
        self.phase_step.zero_()

    def _quantize(self, kind: str, row: torch.Tensor) -> torch.Tensor:
        y = self.model.latents
        if kind == "ste":
            return y + (torch.round(y) - y).detach()
        u = hash_uniform(self.seeds, self.counter, self.index)
        if kind == "noise":
            return y + (u - 0.5)
        if kind == "softround-gaussian":  # row[4]: the standard deviation
            noise = gaussian_from_uniform(u, row[4])
            return soft_round(soft_round(y, row[3]) + noise, row[3])
        if kind != "softround":
            raise ValueError(f"unknown training quantizer {kind!r}; choose softround, noise or ste")
        temperature, a, b = row[3], row[4], row[5]
        u = u.clamp(1e-6, 1.0 - 1e-6)  # Kumaraswamy(a, b) - 1/2 by the inverse CDF
        noise = torch.pow(1.0 - torch.pow(1.0 - u, 1.0 / b), 1.0 / a) - 0.5
        return soft_round(soft_round(y, temperature) + noise, temperature)

    def _loss(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mse, rate = self.model.loss_terms(q, self.image)
        return mse + self.lmbdas * rate / self.n_pixels, mse, rate

    def _step_eager(self, kind: str) -> None:
        row = self.table.index_select(0, self.phase_step)[0]
        loss, mse, rate = self._loss(self._quantize(kind, row))
        params = (self.model.latents, self.model.networks)
        grads = torch.autograd.grad(loss.sum(), params)
        with torch.no_grad():
            for p, g, m, v, size in zip(params, grads, self.moments[::2], self.moments[1::2], row[:2]):
                m.mul_(BETAS[0]).add_(g, alpha=1.0 - BETAS[0])
                v.mul_(BETAS[1]).addcmul_(g, g, value=1.0 - BETAS[1])
                p.sub_(m / (v.sqrt() / row[2] + EPS) * size)
            self.counter += 1
            self.phase_step += 1
            self.last.copy_(torch.stack((loss, mse, rate)))

    def step(self, kind: str) -> None:
        """One optimizer step of the whole batch with quantizer `kind`; no host sync."""
        if self.use_graphs:
            graph = self.graphs.get(kind) or self._capture(kind)
            if graph is not None:
                graph.replay()
                return
        self._step_eager(kind)

    def _capture(self, kind: str) -> torch.cuda.CUDAGraph | None:
        """The step as a CUDA graph: three warm-up steps on a side stream (then undone:
        the training is the eager one's), then the capture."""
        state = [self.model.latents, self.model.networks, *self.moments, self.counter,
                 self.phase_step, self.last]
        saved = [t.detach().clone() for t in state]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._step_eager(kind)
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step_eager(kind)
        except RuntimeError as error:  # an op that cannot be captured: train eagerly
            warnings.warn(f"CUDA graph capture failed ({error}); training without graphs", stacklevel=3)
            self.use_graphs = False
            graph = None
        with torch.no_grad():
            for t, s in zip(state, saved):
                t.copy_(s)
        self.graphs[kind] = graph
        return graph

    def evaluate(self) -> None:
        """True RD cost (latents rounded) of every encode; keep each one's best state."""
        with torch.no_grad():
            loss, _, _ = self._loss(torch.round(self.model.latents))
            better = loss < self.best_loss
            self.best_loss.copy_(torch.where(better, loss, self.best_loss))
            for best, p in zip(self.best, (self.model.latents, self.model.networks)):
                best.copy_(torch.where(better[:, None], p, best))

    def restore_best(self) -> None:
        """Each encode back to its best state (those never evaluated finite keep theirs)."""
        with torch.no_grad():
            seen = (self.best_loss < math.inf)[:, None]
            for best, p in zip(self.best, (self.model.latents, self.model.networks)):
                p.copy_(torch.where(seen, best, p))

    def progress(self, iteration: int, total: int, phase: int) -> BatchProgress:
        """The last step's values; reading them synchronizes with the device."""
        loss, mse, rate = self.last.cpu().double().tolist()
        return BatchProgress(
            iteration, total, phase, tuple(loss),
            tuple(-10.0 * math.log10(max(v, 1e-12)) for v in mse),
            tuple(r / self.n_pixels for r in rate), tuple(self.best_loss.cpu().double().tolist()))


def overfit_batch(
    images: torch.Tensor,
    config: DecoderConfig,
    preset: Preset,
    lmbdas: Sequence[float],
    *,
    seeds: Sequence[int],
    device: str = "cpu",
    callback: BatchCallback | None = None,
    report_every: int = 25,
    graphs: bool = True,
) -> list[CoolChic]:
    """Train one model per image of `images` ((B, C, H, W) float in [0, 1], one size) with
    its own lambda and seed, all in the same kernel launches; return each encode's state of
    lowest true RD cost, as CoolChic models on the CPU.

    Args:
        seeds: each encode's seed: its initial model is ``coolchic.train.overfit``'s for that
            seed, and its noise a hash of the seed (not torch's generator).
        callback: called every `report_every` iterations and at the last one (each call
            waits for the device).
        graphs: on CUDA, capture each quantizer kind's step as a CUDA graph and replay it
            (falls back to eager steps with a warning if capture fails).
    """
    b = images.shape[0]
    if len(lmbdas) != b or len(seeds) != b:
        raise ValueError(f"{b} images need {b} lambdas and {b} seeds, got {len(lmbdas)} and {len(seeds)}")
    if preset.warmup_iterations:
        raise ValueError(f"preset {preset.name!r} has a warm-up, which batched training does not run")
    if any(phase.optimizer != "adam" for phase in preset.phases):
        raise ValueError(f"preset {preset.name!r} trains with SOAP, which batched training does not run")
    if report_every < 1:
        raise ValueError(f"report_every must be >= 1, got {report_every}")
    _, c, h, w = images.shape
    model = BatchedCoolChic.from_seeds(config, h, w, c, seeds,
                                       synthesis_gain=preset.synthesis_gain).to(device)
    trainer = BatchTrainer(model, images, lmbdas, seeds, graphs=graphs,
                           longest_phase=max(p.iterations for p in preset.phases))
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        done = 0
        for index, phase in enumerate(preset.phases):
            trainer.start_phase(phase)
            for step in range(phase.iterations):
                trainer.step(step_kind(phase))
                done += 1
                last = step == phase.iterations - 1
                if (step + 1) % phase.eval_every == 0 or last:
                    trainer.evaluate()
                if callback is not None and (done % report_every == 0 or done == preset.iterations):
                    callback(trainer.progress(done, preset.iterations, index))
            trainer.restore_best()
    finally:
        torch.set_num_threads(threads)
    return [model.model(k) for k in range(b)]
