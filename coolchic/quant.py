"""Quantization: latent quantization proxies for training, and integerization of a trained
model (latents rounded; every layer's weights and biases on a power-of-two step chosen by a
search of the true rate-distortion cost, including the bits of the weights themselves, and
optionally a greedy refinement of the integer weights on the same cost)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from coolchic.config import DecoderConfig, grid_shapes
from coolchic.decoder.constants import BICUBIC, UPS_FRAC, UPS_TAP_MAX
from coolchic.decoder.dispatch import synthesize
from coolchic.entropy.fixedpoint import LATENT_MAX, WEIGHT_MAX, IntegerArm, QLayer
from coolchic.entropy.latents import latent_bits, make_schedule
from coolchic.model.coolchic import CoolChic
from coolchic.model.softround import soft_round_gaussian, soft_round_noise
from coolchic.payload import NetworkWeights, priors_for, taps_from_sent, weights_bits

QuantizerKind = Literal["noise", "softround", "ste", "round"]
QUANTIZER_KINDS: tuple[str, ...] = ("noise", "softround", "ste", "round")


def soft_round(y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable rounding of Agustsson & Theis (NeurIPS 2020): floor(y) + 1/2 +
    tanh(r / T) / (2 tanh(1 / (2 T))), r = y - floor(y) - 1/2. It tends to round(y) as the
    temperature T tends to 0 and to the identity as T grows."""
    centre = torch.floor(y) + 0.5
    r = y - centre
    return centre + torch.tanh(r / temperature) / (2.0 * math.tanh(0.5 / temperature))


def kumaraswamy_b(a: float) -> float:
    """The b that puts the mode of Kumaraswamy(a, b) at 1/2 (a >= 1); a = 1 gives b = 1, the
    uniform distribution."""
    return ((a - 1.0) * 2.0 ** a + 1.0) / a


def kumaraswamy_noise(like: torch.Tensor, a: float) -> torch.Tensor:
    """Noise on (-1/2, 1/2): Kumaraswamy(a, b(a)) minus 1/2, drawn by inverting its CDF
    1 - (1 - x^a)^b. a = 1 is uniform noise; a larger a concentrates it around 0."""
    u = torch.rand_like(like).clamp(1e-6, 1.0 - 1e-6)
    b = kumaraswamy_b(a)
    return (1.0 - (1.0 - u) ** (1.0 / b)) ** (1.0 / a) - 0.5


def make_quantizer(kind: QuantizerKind, *, temperature: float = 0.3, noise_shape: float = 1.0,
                   noise: str = "kumaraswamy") -> Callable[[torch.Tensor], torch.Tensor]:
    """Latent quantization proxy for training, or plain rounding for evaluation.

    - "noise": additive uniform noise (Balle et al., ICLR 2017).
    - "softround": soft-rounding, additive noise, soft-rounding again, y -> s_T(s_T(y) + u)
      with u Kumaraswamy noise of shape `noise_shape` (C3, Kim et al., CVPR 2024); the
      training loop anneals the temperature and the noise shape. With noise="gaussian", u is
      Gaussian of standard deviation `noise_shape` instead (Cool-chic's later recipes).
    - "ste": straight-through rounding (forward rounds, backward is the identity).
    - "round": plain rounding (evaluation).
    """
    if kind == "noise":
        return lambda y: y + (torch.rand_like(y) - 0.5)
    if kind == "softround":
        if noise == "gaussian":
            if temperature <= 0 or noise_shape <= 0:
                raise ValueError("softround needs temperature > 0 and a Gaussian std > 0")
            return lambda y: soft_round_gaussian(y, temperature, noise_shape)
        if noise != "kumaraswamy":
            raise ValueError(f"unknown softround noise {noise!r}; choose kumaraswamy or gaussian")
        if temperature <= 0 or noise_shape < 1:
            raise ValueError("softround needs temperature > 0 and noise_shape >= 1")
        shape = (noise_shape, kumaraswamy_b(noise_shape))  # fused: the same function, ~2.5x faster
        return lambda y: soft_round_noise(y, temperature, shape)
    if kind == "ste":
        return lambda y: y + (torch.round(y) - y).detach()
    if kind == "round":
        return torch.round
    raise ValueError(f"unknown quantizer {kind!r}; choose one of: {', '.join(QUANTIZER_KINDS)}")


def quantize_tensor(t: torch.Tensor, frac: int) -> np.ndarray:
    v = torch.round(t.detach().double().cpu() * (1 << frac)).clamp(-WEIGHT_MAX, WEIGHT_MAX)
    return v.numpy().astype(np.int64)


def quantize_layer(weight: torch.Tensor, bias: torch.Tensor, w_frac: int, b_frac: int) -> QLayer:
    return QLayer(quantize_tensor(weight, w_frac), quantize_tensor(bias, b_frac), w_frac, b_frac)


@dataclass(frozen=True)
class QuantizedModel:
    """Everything the bitstream holds: configuration, integer latents and weights."""

    config: DecoderConfig
    grids: tuple[np.ndarray, ...]  # int64 (h_k, w_k), finest first
    weights: NetworkWeights


def _float_layers(model: CoolChic) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    return {
        "arm": [(m.weight, m.bias) for m in model.arm.layers],
        "mlp": [(m.weight, m.bias) for m in model.synthesis.mlp],
        "residual": [(m.weight, m.bias) for m in model.synthesis.residual],
    }


FRAC_RANGE = (2, 16)  # weight/bias steps searched: 2^-2 ... 2^-16
FRAC_START = 8


SCAN_RADIUS = 3  # steps within this many of the start are all tried


def _step_search(cost: Callable[[int], float], start: int) -> int:
    """Integer minimizer of a step's cost: every step within SCAN_RADIUS of `start`, then on
    past the window's edge while the cost keeps falling.

    The cost is not unimodal: rounding the few biases of a layer one step finer can cost
    more error than two steps finer. On 12 quick-preset models (kodim03, 05, 09, 19, 21, 23
    at lambda 2e-2 and 4e-3; experiments/kodak-quick-v3/step_search.py), stopping at the first
    rise (the previous search) gave a true RD cost 0.18 % higher on average than this, which
    takes 0.8 s (26 %) longer; trying every step was 0.02 % better than this, for 84 % more.
    """
    lo, hi = FRAC_RANGE
    costs: dict[int, float] = {}

    def at(f: int) -> float:
        if f not in costs:
            costs[f] = cost(f)
        return costs[f]

    window = range(max(lo, start - SCAN_RADIUS), min(hi, start + SCAN_RADIUS) + 1)
    best = min(window, key=lambda f: (at(f), abs(f - start)))
    for direction, edge in ((1, window[-1]), (-1, window[0])):
        if best == edge:
            while lo <= best + direction <= hi and at(best + direction) < at(best):
                best += direction
    return best


def quantize_taps(taps: torch.Tensor | None) -> np.ndarray | None:
    """Learned upsampling taps ((levels, 4) real, each level summing to 1) as the integers
    over 2^UPS_FRAC that the bitstream holds: taps 0, 1 and 3 rounded, tap 2 the rest of
    2^UPS_FRAC (so a level's gain stays exactly 1); None stays None (bicubic). A level whose
    tap 2 would leave [-UPS_TAP_MAX, UPS_TAP_MAX] (far from any filter training gives) is
    sent as the bicubic taps, so an encode never fails here."""
    if taps is None:
        return None
    t = torch.round(taps.detach().double().cpu() * (1 << UPS_FRAC)).numpy().astype(np.int64)
    out = taps_from_sent(np.clip(t[:, [0, 1, 3]], -UPS_TAP_MAX, UPS_TAP_MAX))
    wild = np.abs(out[:, 2]) > UPS_TAP_MAX
    out[wild] = BICUBIC
    return out


class _Search:
    """Search of the weight and bias steps on the true cost D + lambda * R, D the MSE of the
    fixed-point reconstruction on [0, 1], R in bits/pixel (latents under the integer ARM plus
    the coded weights): first one (w_frac, b_frac) per module group (ARM, synthesis MLP,
    residual convolutions), then each layer's own steps from there, then optionally a
    greedy refinement of the integers themselves."""

    def __init__(self, model: CoolChic, image: np.ndarray, bit_depth: int, lmbda: float):
        self.model, self.lmbda, self.bit_depth = model, lmbda, bit_depth
        self.image = image.astype(np.float64)
        self.n_pixels = model.n_pixels()
        self.float_layers = _float_layers(model)
        self.taps = quantize_taps(model.taps())
        self.grids = tuple(
            torch.round(y.detach().cpu()).clamp(-LATENT_MAX, LATENT_MAX)[0, 0].numpy().astype(np.int64)
            for y in model.latents
        )
        shapes = grid_shapes(model.height, model.width, model.config.latents.n_grids)
        self.schedule = make_schedule(shapes, model.config.arm.context)
        # the current integer layers of each group; the others' are held here while one
        # group is searched
        self.chosen = {name: self.uniform(name, (FRAC_START, FRAC_START)) for name in self.float_layers}
        # the weight prior whose lambda is nearest (the file names whichever prior codes
        # the final integers best, pack_weights decides): its means by group
        priors = priors_for(model.config, model.channels)
        self.prior_means: dict[str, tuple | None] = dict.fromkeys(self.float_layers)
        if priors:
            prior = min(priors, key=lambda p: abs(np.log(p.lmbda / lmbda)))
            start = 0
            for name in ("arm", "mlp", "residual"):
                n = len(self.float_layers[name])
                self.prior_means[name] = prior.means[start : start + n]
                start += n

    def uniform(self, name: str, fracs: tuple[int, int]) -> tuple[QLayer, ...]:
        """Group `name` quantized with the same (w_frac, b_frac) for every layer."""
        return tuple(quantize_layer(w, b, *fracs) for w, b in self.float_layers[name])

    def distortion(self, mlp: tuple[QLayer, ...], residual: tuple[QLayer, ...]) -> float:
        x = synthesize(self.grids, mlp, residual, bit_depth=self.bit_depth, taps=self.taps)
        scale = float((1 << self.bit_depth) - 1) ** 2
        return float(np.mean((x.astype(np.float64) - self.image) ** 2)) / scale

    def cost(self, name: str, fracs: tuple[int, int]) -> float:
        return self.layers_cost(name, self.uniform(name, fracs))

    def layers_cost(self, name: str, layers: tuple[QLayer, ...]) -> float:
        """True cost with the integer `layers` for group `name`, the others as chosen.
        (The ARM's cost leaves out the distortion, which it does not change.)"""
        bits = weights_bits(layers, self.prior_means[name])
        if name == "arm":
            bits += latent_bits(self.schedule, list(self.grids), IntegerArm(layers))
            return self.lmbda * bits / self.n_pixels
        groups = {n: self.chosen[n] for n in ("mlp", "residual")}
        groups[name] = layers
        return self.distortion(groups["mlp"], groups["residual"]) + self.lmbda * bits / self.n_pixels

    def group_steps(self, name: str) -> tuple[QLayer, ...]:
        """One (w_frac, b_frac) for the whole group: the weights' step first, then the biases'."""
        best_w = _step_search(lambda f: self.cost(name, (f, f)), FRAC_START)
        best_b = _step_search(lambda f: self.cost(name, (best_w, f)), best_w)
        return self.uniform(name, (best_w, best_b))

    def layer_steps(self, name: str) -> tuple[QLayer, ...]:
        """Each layer's own steps, searched one layer and one tensor at a time from
        the group's (the chosen layers never cost more than the group's)."""
        layers = list(self.chosen[name])
        for i, (w, b) in enumerate(self.float_layers[name]):
            for which in (0, 1):  # the weight's step, then the bias's
                def cost(f: int, i: int = i, which: int = which, w=w, b=b) -> float:
                    fracs = [layers[i].w_frac, layers[i].b_frac]
                    fracs[which] = f
                    trial = list(layers)
                    trial[i] = quantize_layer(w, b, *fracs)
                    return self.layers_cost(name, tuple(trial))

                start = (layers[i].w_frac, layers[i].b_frac)[which]
                best = _step_search(cost, start)
                if best != start:
                    fracs = [layers[i].w_frac, layers[i].b_frac]
                    fracs[which] = best
                    layers[i] = quantize_layer(w, b, *fracs)
        return tuple(layers)

    def refine(self, name: str, trials: int) -> tuple[QLayer, ...]:
        """Greedy refinement of the rounded integers of group `name` against the true cost:
        the `trials` values whose rounding was the closest call (fractional part nearest
        1/2) are each moved to their other neighbour, and the move is kept when the cost
        falls."""
        layers = [QLayer(q.weight.copy(), q.bias.copy(), q.w_frac, q.b_frac) for q in self.chosen[name]]
        candidates = []  # (closeness, layer, "weight"|"bias", flat index, step)
        for i, (w, b) in enumerate(self.float_layers[name]):
            for kind, t, frac in (("weight", w, layers[i].w_frac), ("bias", b, layers[i].b_frac)):
                scaled = t.detach().double().cpu().numpy().reshape(-1) * (1 << frac)
                r = scaled - np.round(scaled)
                for j in np.argsort(-np.abs(r))[:trials]:
                    candidates.append((abs(r[j]), i, kind, int(j), 1 if r[j] > 0 else -1))
        candidates.sort(key=lambda c: -c[0])
        best = self.layers_cost(name, tuple(layers))
        for _, i, kind, j, step in candidates[:trials]:
            flat = getattr(layers[i], kind).reshape(-1)  # a view: edits the layer in place
            old = flat[j]
            flat[j] = min(WEIGHT_MAX, max(-WEIGHT_MAX, old + step))
            c = self.layers_cost(name, tuple(layers))
            if c < best:
                best = c
            else:
                flat[j] = old
        return tuple(layers)

    def run(self, refine_trials: int = 0, *, per_layer: bool = True) -> QuantizedModel:
        names = [n for n in ("arm", "mlp", "residual") if self.float_layers[n]]
        for name in names:
            self.chosen[name] = self.group_steps(name)
        if per_layer:
            for name in names:
                self.chosen[name] = self.layer_steps(name)
        if refine_trials > 0:  # synthesis first (distortion), then the ARM (rate)
            for name in ("mlp", "residual", "arm"):
                if self.float_layers[name]:
                    self.chosen[name] = self.refine(name, refine_trials)
        weights = NetworkWeights(self.chosen["arm"], self.chosen["mlp"], self.chosen["residual"],
                                 self.taps)
        return QuantizedModel(self.model.config, self.grids, weights)


def integerize(model: CoolChic, image: np.ndarray, *, bit_depth: int, lmbda: float,
               refine_trials: int = 0, per_layer: bool = True) -> QuantizedModel:
    """Round the latents and quantize every layer on its best power-of-two step (one per
    module group, then, with `per_layer`, one per layer and tensor), then optionally refine
    the integer weights greedily against the true cost.

    Args:
        image: the original (H, W, C) integer image, for the distortion term.
        refine_trials: integers per module group (ARM, synthesis MLP, residual convs)
            tried at their other rounding neighbour; each trial costs one evaluation of
            the true cost (0: no refinement).
    """
    return _Search(model, image, bit_depth, lmbda).run(refine_trials, per_layer=per_layer)
