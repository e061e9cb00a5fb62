"""Hand-fused training kernels: the latent rate under the ARM, and the synthesis with its MSE.

Each is a ``torch.autograd.Function`` whose forward pass also computes every gradient,
band by band (a few rows of all latent grids packed in one canvas, or of the image, at a
time), and whose backward pass only scales the stored gradients. Compared with autograd over the plain modules
(``CoolChic.forward``) this

* keeps each band's activations (a few hundred kB) in cache instead of streaming
  full-image tensors through memory a few dozen times;
* lays activations out channel-first, (features, positions), so every layer is one
  (out, in) @ (in, n) matrix product on contiguous memory;
* gathers the ARM's contexts and the 3x3 convolutions' taps as contiguous slices of
  zero- or edge-padded rows (a neighbour at (dr, dc) is a fixed flat offset), and scatters
  their gradients back the same way, with no index tensors;
* writes the discretized Laplace rate and its derivatives in closed form (about 40
  elementwise operations instead of about 90 forward and backward);
* does the last vertical 2x pass of the upsampling inside each synthesis band as one small
  matrix product, so the full-resolution stack of upsampled latents never exists.

The functions are the same as those of ``CoolChic.forward``, ``laplace_bits`` and the MSE
(checked against them in float64 by tests/test_speed_paths.py), so training gives the same
results up to float rounding. Both run on any device; on CUDA each grid or image is one band.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from coolchic.config import CONTEXT_COLS, CONTEXT_ROWS, context_offsets
from coolchic.entropy.tables import LOG_SCALE_MAX, LOG_SCALE_MIN
from coolchic.model import native
from coolchic.model.upsampling import (
    band_matrix,
    range_basis,
    range_matrix,
    taps_tensor,
    upsample_axis,
    upsample_cascade,
)

MIN_PROB = 2.0**-24  # the integer tables never give a symbol less than 2^-24
ARM_BAND = 1 << 14  # latent positions per band on the CPU (working set within L2; measured)
SYNTHESIS_BAND = 3 << 13  # pixels per band on the CPU (measured)
_LN2 = math.log(2.0)
_relu_grad = torch.ops.aten.threshold_backward  # grad * (activation > 0), one pass


@dataclass(frozen=True)
class Kernels:
    """The per-band functions (plain, or compiled by `compiled_kernels`), and the native
    kernels that replace the band loops on CPU float tensors (`native_kernels`)."""

    arm_band: Callable
    native: native.Library | None = None

    def native_for(self, t: torch.Tensor) -> native.Library | None:
        """The native kernels if they take tensors like `t`."""
        return self.native if self.native is not None and self.native.supports(t) else None


def _band_size(device: torch.device, cpu_size: int) -> int:
    """Band size: small on the CPU (cache), unlimited elsewhere (fewer kernel launches)."""
    return cpu_size if device.type == "cpu" else 1 << 62


def _scaled(grads, grad_output: torch.Tensor) -> list:
    """The stored gradients times the incoming one (skipped for the usual 1.0 of the MSE
    term on the CPU, where checking it costs nothing: full-image tensors)."""
    if grad_output.device.type == "cpu" and float(grad_output) == 1.0:
        return list(grads)
    return [None if g is None else g * grad_output for g in grads]


def _laplace_rate(y: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor,
                  valid: torch.Tensor, grads: bool):
    """Bits of integer-valued y under Laplace(mu, exp(log_scale)) discretized to unit bins,
    log_scale clamped to the tables' range, probabilities floored at MIN_PROB.

    With a = |y - mu|, t = 1 / scale, e1 = exp(-(a + 1/2) t), e2 = exp(-|a - 1/2| t):
    p = (e2 - e1) / 2 for a >= 1/2 and 1 - (e1 + e2) / 2 below (the CDF difference on
    the side where it does not cancel). Both branches share dp/da = t (e1 - e2) / 2 and
    dp/dt = ((a + 1/2) e1 - (a - 1/2) e2) / 2.

    Args:
        y, mu, log_scale: (n,) tensors.
        valid: (n,) 1.0 where the position is a latent, 0.0 where it is padding.
        grads: also return the derivatives of the total bits.

    Returns:
        bits: total over valid positions (0-dim); and if `grads`, (2, n) derivatives of
        the bits w.r.t. mu and log_scale (the derivative w.r.t. y is minus the first row).
    """
    d = mu - y
    a = d.abs()
    clamped = log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    nt = clamped.neg().exp_().neg_()  # -1 / scale
    ap = a + 0.5
    am = a - 0.5
    e1 = (ap * nt).exp_()
    e2 = (am.abs() * nt).exp_()
    e21 = e2 - e1
    p = torch.where(am < 0, (e1 + e2).mul_(-0.5).add_(1.0), e21 * 0.5)
    p_floor = p.clamp_min(MIN_PROB)
    bits = -torch.dot(p_floor.log2(), valid)
    if not grads:
        return bits
    # k = (d bits / d p) / 2 = -1 / (2 p ln 2) where p is not floored, 0 elsewhere and on
    # padding; then d bits / d mu = |k t (e1 - e2)| sign(mu - y) and
    # d bits / d log_scale = -t k ((a + 1/2) e1 - (a - 1/2) e2) inside the clamp
    k = torch.where(p >= MIN_PROB, valid, 0.0).div_(p_floor).mul_(-0.5 / _LN2)
    g = torch.empty((2, y.shape[0]), dtype=y.dtype, device=y.device)
    torch.copysign(e21.mul_(nt).mul_(k), d, out=g[0])
    torch.mul((ap * e1).sub_(am * e2).mul_(k), nt, out=g[1])
    g[1].mul_(clamped == log_scale)
    return bits, g


def _arm_band(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, params: list[torch.Tensor]):
    """ARM and rate of one band, forward and backward.

    Args:
        x: (context, n) neighbours; y: (n,) latents; valid: (n,) 1.0 on latents, 0.0 on
            padding positions; params: the ARM's weights, then its biases.

    Returns:
        (bits, d bits / d x (context, n), d bits / d y (n,), [d bits / d each param]).
    """
    n_layers = len(params) // 2
    weights, biases = params[:n_layers], params[n_layers:]
    acts = [x]
    for i in range(n_layers):
        z = torch.addmm(biases[i][:, None], weights[i], acts[-1])  # (out, n)
        acts.append(z.relu_() if i < n_layers - 1 else z)
    bits, g = _laplace_rate(y, acts[-1][0], acts[-1][1], valid, grads=True)
    grad_y = g[0].neg()
    grad_w, grad_b = [], []
    ones = torch.ones_like(y)
    for i in range(n_layers - 1, -1, -1):
        grad_w.append(g @ acts[i].t())  # (out, in)
        grad_b.append(g @ ones)
        g = weights[i].t() @ g  # (in, n)
        if i > 0:
            g = _relu_grad(g, acts[i], 0)
    return bits, g, grad_y, grad_w[::-1] + grad_b[::-1]


def _arm_band_bits(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor,
                   params: list[torch.Tensor]) -> torch.Tensor:
    """`_arm_band`'s bits only (evaluation)."""
    n_layers = len(params) // 2
    a = x
    for i in range(n_layers):
        a = torch.addmm(params[n_layers + i][:, None], params[i], a)
        if i < n_layers - 1:
            a = a.relu_()
    return _laplace_rate(y, a[0], a[1], valid, grads=False)


class _ArmRate(torch.autograd.Function):
    """Total bits of all latent grids under the ARM; inputs (*grids, *weights, *biases)."""

    @staticmethod
    def forward(ctx, context: int, n_grids: int, kernels: Kernels, *tensors: torch.Tensor) -> torch.Tensor:
        grids, params = tensors[:n_grids], list(tensors[n_grids:])
        grads = [torch.zeros_like(p) for p in params]
        total, grid_grads = _arm_rate_canvas(grids, params, context, kernels, grads)
        ctx.save_for_backward(*grid_grads, *grads)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return (None, None, None, *_scaled(ctx.saved_tensors, grad_output))


def canvas_layout(shapes: list[tuple[int, int]]) -> tuple[int, int, list[tuple[int, int]]]:
    """Where the grids sit in one zero canvas: (rows, row width, [(row, col) of each grid]).

    Grid 0 first, below CONTEXT_ROWS zero rows; the others side by side in a strip below it,
    again below CONTEXT_ROWS zero rows; at least CONTEXT_COLS zero columns on both sides of
    every grid. A latent's causal neighbours are then the same flat offsets in every grid,
    and small grids share bands instead of costing a band each.
    """
    (h0, w0), rest = shapes[0], shapes[1:]
    places = [(CONTEXT_ROWS, CONTEXT_COLS)]
    row, col = CONTEXT_ROWS + h0 + CONTEXT_ROWS, CONTEXT_COLS
    for _, w in rest:
        places.append((row, col))
        col += w + CONTEXT_COLS
    width = max(w0 + 2 * CONTEXT_COLS, col)
    rows = row + rest[0][0] if rest else CONTEXT_ROWS + h0
    return rows, width, places


def _arm_rate_canvas(grids, params: list[torch.Tensor], context: int, kernels: Kernels,
                     grads: list | None):
    """Bits of all grids (each (1, 1, h, w)), band by band of canvas rows with the kernel
    `kernels.arm_band` (or all at once by the native kernel). Accumulates the parameters'
    gradients into `grads` and returns the grids' gradients too when `grads` is not None."""
    shapes = [tuple(g.shape[-2:]) for g in grids]
    rows, pw, places = canvas_layout(shapes)
    ref = grids[0]
    canvas = ref.new_zeros(rows, pw)
    valid = ref.new_zeros(rows, pw)  # 1.0 on latents, 0.0 on padding
    for (r, c), (h, w), grid in zip(places, shapes, grids):
        canvas[r : r + h, c : c + w] = grid[0, 0]
        valid[r : r + h, c : c + w] = 1.0
    flat, valid = canvas.view(-1), valid.view(-1)
    grad_flat = torch.zeros_like(flat) if grads is not None else None
    offsets = [dr * pw + dc for dr, dc in context_offsets(context)]
    lib = kernels.native_for(ref)
    if lib is not None:
        total = _arm_rate_native(lib, flat, valid, pw, rows, offsets, params, grad_flat, grads)
    else:
        total = _arm_rate_bands(flat, valid, pw, rows, offsets, params, kernels.arm_band,
                                grad_flat, grads)
    if grads is None:
        return total, None
    grad = grad_flat.view(rows, pw)
    return total, [grad[r : r + h, c : c + w].reshape(1, 1, h, w)
                   for (r, c), (h, w) in zip(places, shapes)]


def _arm_rate_bands(flat, valid, pw: int, rows: int, offsets: list[int], params, band,
                    grad_flat, grads) -> torch.Tensor:
    step = max(1, _band_size(flat.device, ARM_BAND) // pw)
    total = flat.new_zeros(())
    for r0 in range(CONTEXT_ROWS, rows, step):
        r1 = min(rows, r0 + step)
        # positions (r0, CONTEXT_COLS) .. (r1 - 1, pw - CONTEXT_COLS - 1), read in one run;
        # the padding between them rides along, masked out by `valid`
        start = r0 * pw + CONTEXT_COLS
        n = (r1 - r0) * pw - 2 * CONTEXT_COLS
        x = torch.stack([flat[start + o : start + o + n] for o in offsets])  # (context, n)
        y, v = flat[start : start + n], valid[start : start + n]
        if grads is None:
            total += _arm_band_bits(x, y, v, params)
            continue
        bits, grad_x, grad_y, grad_params = band(x, y, v, params)
        total += bits
        for acc, g in zip(grads, grad_params):
            acc += g
        for k, o in enumerate(offsets):  # contexts were shifted slices: add back shifted
            grad_flat[start + o : start + o + n] += grad_x[k]
        grad_flat[start : start + n] += grad_y
    return total


def _pack(layers: list[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype) -> torch.Tensor:
    """Each layer's weight then bias, flattened into one tensor (the native layout)."""
    return torch.cat([t.detach().reshape(-1) for layer in layers for t in layer]).to(dtype)


def _unpack_into(packed: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Add the packed gradients (`_pack`'s layout) to the (weight, bias) tensors."""
    parts = packed.split([t.numel() for layer in layers for t in layer])
    for t, g in zip((t for layer in layers for t in layer), parts):
        t += g.view(t.shape).to(t.dtype)


def _arm_rate_native(lib: native.Library, flat, valid, pw: int, rows: int, offsets: list[int],
                     params, grad_flat, grads) -> torch.Tensor:
    n_layers = len(params) // 2
    layers = list(zip(params[:n_layers], params[n_layers:]))
    widths = [params[0].shape[1], *(w.shape[0] for w in params[:n_layers])]
    packed = _pack(layers, flat.dtype)
    grad_packed = packed.new_zeros(packed.shape, dtype=torch.float64) if grads is not None else None
    start = CONTEXT_ROWS * pw + CONTEXT_COLS  # every position from the first latent on
    n = (rows - CONTEXT_ROWS) * pw - 2 * CONTEXT_COLS
    bits = lib.arm_rate(flat, valid, start, n, offsets, widths, packed,
                        (LOG_SCALE_MIN, LOG_SCALE_MAX), MIN_PROB, grad_flat, grad_packed)
    if grads is not None:
        _unpack_into(grad_packed, list(zip(grads[:n_layers], grads[n_layers:])))
    return flat.new_tensor(bits)


EAGER = Kernels(arm_band=_arm_band)


@functools.cache
def native_kernels() -> Kernels | None:
    """The native kernels (``coolchic.model.native``), built on first use; None when they
    cannot be built here (see ``native.unavailable_reason``)."""
    lib = native.library()
    return None if lib is None else Kernels(arm_band=_arm_band, native=lib)


@functools.cache
def compiled_kernels() -> Kernels:
    """The band kernels compiled by ``torch.compile`` (dynamic shapes: one compilation per
    process and layer configuration serves every band size). Compiling takes tens of
    seconds on a small CPU; see ``coolchic.train`` for when it pays."""
    return Kernels(arm_band=torch.compile(_arm_band, dynamic=True))


def arm_rate(grids: list[torch.Tensor], layers: list[tuple[torch.Tensor, torch.Tensor]],
             context: int, *, kernels: Kernels = EAGER) -> torch.Tensor:
    """Bits of the latents (grids finest first, each (1, 1, h, w), integer-valued or
    noisy) under the ARM (layers as (weight (out, in), bias (out,)), ReLU between), the
    same value as ``laplace_bits(...).sum()`` of ``CoolChic.forward``. Differentiable
    w.r.t. the grids and the layers; computes no gradients when grad mode is off."""
    params = [w for w, _ in layers] + [b for _, b in layers]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*grids, *params)):
        return _ArmRate.apply(context, len(grids), kernels, *grids, *params)
    with torch.no_grad():
        return _arm_rate_canvas(grids, params, context, kernels, None)[0]


def _pad_grad(gp: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
    """Adjoint of edge replication by (1 column each side, `top` rows, `bottom` rows):
    (C, rows + top + bottom, W + 2) -> (C, rows, W)."""
    g = gp[:, :, 1:-1].clone()
    g[:, :, 0] += gp[:, :, 0]
    g[:, :, -1] += gp[:, :, -1]
    if top:
        g[:, 1] += g[:, 0]
        g = g[:, 1:]
    if bottom:
        g[:, -2] += g[:, -1]
        g = g[:, :-1]
    return g


class _SynthesisMse(torch.autograd.Function):
    """MSE of the synthesis against an image; inputs (finest, coarser, vtaps, image,
    *mlp weights, *mlp biases, *conv weights, *conv biases), see `synthesis_mse`."""

    @staticmethod
    def forward(ctx, n_mlp: int, kernels: Kernels, finest: torch.Tensor, coarser: torch.Tensor | None,
                vtaps: torch.Tensor | None, image: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        grads = [torch.zeros_like(p) for p in params]
        grad_finest = torch.zeros_like(finest, memory_format=torch.contiguous_format)
        grad_coarser = (torch.zeros_like(coarser, memory_format=torch.contiguous_format)
                        if coarser is not None else None)
        grad_vtaps = (torch.zeros(4, dtype=torch.float64, device=finest.device)
                      if vtaps is not None and vtaps.requires_grad else None)
        mse = _synthesis_mse(finest, coarser, image, params, n_mlp, kernels,
                             (grad_finest, grad_coarser, grads, grad_vtaps), vtaps)
        if grad_vtaps is not None:
            grad_vtaps = grad_vtaps.to(vtaps.dtype)
        ctx.save_for_backward(grad_finest, grad_coarser, grad_vtaps, *grads)
        return mse

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return (None, None, *_scaled(ctx.saved_tensors[:3], grad_output), None,
                *_scaled(ctx.saved_tensors[3:], grad_output))


def _synthesis_mse(finest, coarser, image, params, n_mlp: int, kernels: Kernels, grads,
                   vtaps: torch.Tensor | None = None) -> torch.Tensor:
    """The last vertical 2x pass of the upsampling (taps `vtaps`, None: bicubic), the
    synthesis of ``Synthesis.forward`` and the MSE against `image`, band by band of rows;
    accumulates the gradients into `grads` = (finest's, coarser's, [parameters'], vtaps'
    (float64, or None: not wanted); all contiguous) unless it is None."""
    vtaps = None if vtaps is None else vtaps.detach()
    h, w = finest.shape[-2:]
    n_conv = (len(params) - 2 * n_mlp) // 2
    mlp_w, mlp_b = params[:n_mlp], params[n_mlp : 2 * n_mlp]
    conv_w = params[2 * n_mlp : 2 * n_mlp + n_conv]
    conv_b = params[2 * n_mlp + n_conv :]
    lib = kernels.native_for(finest)
    if lib is not None and image.shape[1] <= native.MAX_CHANNELS:
        return _synthesis_mse_native(lib, finest, coarser, image, list(zip(mlp_w, mlp_b)),
                                     list(zip(conv_w, conv_b)), grads, vtaps)
    # (ky, kx)-major list of (out, in) matrices of each convolution
    taps = [[cw[:, :, ky, kx] for ky in range(3) for kx in range(3)] for cw in conv_w]
    scale = 2.0 / image.numel()  # d mse / d x_hat = scale * (x_hat - image)
    rows = max(1, _band_size(finest.device, SYNTHESIS_BAND) // w)
    total = finest.new_zeros(())
    pw = w + 2
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - n_conv), min(h, r1 + n_conv)  # rows the convolutions reach
        x = finest[0, :, a:b]  # (1, b - a, W)
        if coarser is not None:  # the last vertical 2x pass for these rows: one small product
            up, up_lo = range_matrix(a, b, coarser.shape[-2], finest.dtype, finest.device, vtaps)
            x = torch.cat((x, torch.matmul(up, coarser[0, :, up_lo : up_lo + up.shape[1]])))
        acts = [x.reshape(x.shape[0], -1)]
        for i, (wt, bias) in enumerate(zip(mlp_w, mlp_b)):
            z = torch.addmm(bias[:, None], wt, acts[-1])  # (out, pixels)
            acts.append(z.relu_() if i < n_mlp - 1 else z)
        z = acts[-1].view(-1, b - a, w)
        lo, hi = a, b  # image rows held by z
        saved = []
        for j in range(n_conv):
            top, bottom = int(lo == 0), int(hi == h)
            xp = F.pad(z[None], (1, 1, top, bottom), mode="replicate")[0]  # (C, rows', W + 2)
            out_rows = xp.shape[1] - 2
            n = out_rows * pw - 2  # padded-width layout, the last row's 2 spares dropped
            flat = xp.reshape(xp.shape[0], -1)
            acc = conv_b[j][:, None].expand(-1, out_rows * pw).clone()
            for k, tap in enumerate(taps[j]):  # shift (ky, kx): one contiguous slice
                o = (k // 3) * pw + k % 3
                acc[:, :n].addmm_(tap, flat[:, o : o + n])
            conv = acc.view(-1, out_rows, pw)[:, :, :w]
            saved.append((flat, n, out_rows, top, bottom))
            z = z.narrow(1, 1 - top, out_rows) + conv
            lo, hi = lo + 1 - top, hi - 1 + bottom
        diff = z[:, r0 - lo : r1 - lo] - image[0, :, r0:r1]  # (C, r1 - r0, W)
        total += torch.dot(diff.reshape(-1), diff.reshape(-1))
        if grads is None:
            continue
        grad_finest, grad_coarser, grad_params, grad_vtaps = grads
        g = torch.zeros_like(z)  # d mse / d z, rows lo .. hi
        g[:, r0 - lo : r1 - lo] = diff * scale
        for j in range(n_conv - 1, -1, -1):
            flat, n, out_rows, top, bottom = saved[j]
            gp = F.pad(g, (0, 2)).view(g.shape[0], -1)[:, :n]  # (C, n), zero on the spares
            grad_params[2 * n_mlp + n_conv + j] += g.sum((1, 2))
            gflat = torch.zeros_like(flat)
            gw = grad_params[2 * n_mlp + j]
            for k, tap in enumerate(taps[j]):
                o = (k // 3) * pw + k % 3
                gw[:, :, k // 3, k % 3].addmm_(gp, flat[:, o : o + n].t())
                gflat[:, o : o + n].addmm_(tap.t(), gp)
            g_in = _pad_grad(gflat.view(flat.shape[0], -1, pw), top, bottom)
            g_in.narrow(1, 1 - top, out_rows).add_(g)  # the residual branch
            g = g_in
        g = g.reshape(g.shape[0], -1)
        for i in range(n_mlp - 1, -1, -1):
            grad_params[i].addmm_(g, acts[i].t())
            grad_params[n_mlp + i] += g.sum(1)
            g = mlp_w[i].t() @ g
            if i > 0:
                g = _relu_grad(g, acts[i], 0)
        g = g.view(-1, b - a, w)  # (n_grids, b - a, W)
        grad_finest[0, 0, a:b] += g[0]
        if coarser is not None:
            inputs = coarser[0, :, up_lo : up_lo + up.shape[1]]  # (n_grids - 1, m, W)
            grad_coarser[0, :, up_lo : up_lo + up.shape[1]] += torch.matmul(up.t(), g[1:])
            if grad_vtaps is not None:  # d mse / d up = sum over grids of g @ inputs^T
                grad_up = torch.einsum("krw,kmw->rm", g[1:], inputs).double()
                basis, _ = range_basis(a, b, coarser.shape[-2])
                grad_vtaps += torch.einsum("trm,rm->t", torch.tensor(basis, device=g.device), grad_up)
    return total / image.numel()


def _synthesis_mse_native(lib: native.Library, finest, coarser, image, mlp, convs, grads,
                          vtaps: torch.Tensor | None) -> torch.Tensor:
    dtype = finest.dtype
    taps = (taps_tensor(None, torch.float64) if vtaps is None else vtaps.double()).contiguous()
    widths = [mlp[0][0].shape[1], *(wt.shape[0] for wt, _ in mlp)]
    mlp_packed, conv_packed = _pack(mlp, dtype), _pack(convs, dtype) if convs else finest.new_zeros(0)
    native_grads = None
    if grads is not None:
        native_grads = (grads[0], grads[1], mlp_packed.new_zeros(mlp_packed.shape, dtype=torch.float64),
                        conv_packed.new_zeros(conv_packed.shape, dtype=torch.float64))
    band_rows = max(1, SYNTHESIS_BAND // finest.shape[-1])
    total = lib.synthesis_mse(finest.contiguous(), None if coarser is None else coarser.contiguous(),
                              image.to(dtype).contiguous(), widths, mlp_packed, len(convs),
                              conv_packed, band_rows, native_grads, taps,
                              None if grads is None else grads[3])
    if grads is not None:
        n_mlp = len(mlp)
        params = grads[2]
        _unpack_into(native_grads[2], list(zip(params[:n_mlp], params[n_mlp : 2 * n_mlp])))
        n_conv = len(convs)
        conv_grads = params[2 * n_mlp :]
        _unpack_into(native_grads[3], list(zip(conv_grads[:n_conv], conv_grads[n_conv:])))
    return finest.new_tensor(total / image.numel())


def synthesis_mse(finest: torch.Tensor, coarser: torch.Tensor | None, image: torch.Tensor,
                  mlp: list[tuple[torch.Tensor, torch.Tensor]],
                  convs: list[tuple[torch.Tensor, torch.Tensor]], *,
                  kernels: Kernels = EAGER, vtaps: torch.Tensor | None = None) -> torch.Tensor:
    """``mean((Synthesis.forward(upsample_cascade(grids)) - image) ** 2)``, computed band
    by band with the last vertical 2x pass of the upsampling done in each band.

    Args:
        finest: (1, 1, H, W) finest latent grid.
        coarser: (1, n_grids - 1, ceil(H / 2), W): ``upsample_cascade`` of the other grids
            upsampled 2x horizontally only (see `upsample_stack`); None with one grid.
        image: (1, C, H, W).
        mlp, convs: the synthesis layers as (weight, bias).
        vtaps: (4,) real taps of the last vertical pass (learned upsampling: grid 0's
            level); None: the bicubic ones.

    Differentiable w.r.t. the latents, the layers and `vtaps`; no gradients are computed
    when grad mode is off.
    """
    params = (*(w for w, _ in mlp), *(b for _, b in mlp),
              *(w for w, _ in convs), *(b for _, b in convs))
    inputs = (finest, coarser, vtaps, *params)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return _SynthesisMse.apply(len(mlp), kernels, finest, coarser, vtaps, image, *params)
    with torch.no_grad():
        return _synthesis_mse(finest, coarser, image, params, len(mlp), kernels, None, vtaps)


class _UpsampleStack(torch.autograd.Function):
    """`upsample_stack` by the native kernel; inputs (library, width, taps, *grids 1..),
    taps (n_grids - 1, 4) real or None (bicubic)."""

    @staticmethod
    def forward(ctx, lib: native.Library, width: int, taps: torch.Tensor | None,
                *grids: torch.Tensor) -> torch.Tensor:
        ctx.lib, ctx.width = lib, width
        ctx.shapes = [g.shape for g in grids]
        grids = [g.contiguous() for g in grids]
        levels = (taps_tensor(None, torch.float64).repeat(len(grids), 1) if taps is None
                  else taps.detach().double().contiguous())
        ctx.learned = taps is not None and taps.requires_grad
        ctx.save_for_backward(levels, *(grids if ctx.learned else ()))
        out = grids[0].new_empty(1, len(grids), grids[0].shape[-2], width)
        lib.upsample_stack(grids, width, levels, out=out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        levels, *grids = ctx.saved_tensors
        grads = [grad.new_empty(s) for s in ctx.shapes]
        grad_taps = torch.zeros_like(levels) if ctx.learned else None
        ctx.lib.upsample_stack(grids or grads, ctx.width, levels, grad_out=grad.contiguous(), grads=grads,
                               grad_taps=grad_taps)
        if grad_taps is not None:
            grad_taps = grad_taps.to(grad.dtype)
        return (None, None, grad_taps, *grads)


def upsample_stack(grids: list[torch.Tensor], *, kernels: Kernels = EAGER,
                   taps: torch.Tensor | None = None) -> torch.Tensor | None:
    """The `coarser` input of `synthesis_mse`: grids 1.. (each (1, 1, h_k, w_k)) cascaded
    to grid 1's size, then 2x horizontally to grid 0's width.

    Args:
        taps: (n_grids - 1, 4) real taps, row l into grid l (learned upsampling;
            differentiable); None: the bicubic ones.
    """
    if len(grids) == 1:
        return None
    lib = kernels.native_for(grids[0])
    if lib is not None:
        return _UpsampleStack.apply(lib, grids[0].shape[-1], taps, *grids[1:])
    # (1, n_grids - 1, h_1, w_1)
    stack = upsample_cascade(grids[1:], taps=None if taps is None else taps[1:])
    band = band_matrix(stack.dtype, stack.device, None if taps is None else taps[0])
    return upsample_axis(stack, -1, 0, grids[0].shape[-1], band)
