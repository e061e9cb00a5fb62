"""N COOL-CHIC models of one image size and decoder configuration, stacked on a leading
batch axis so that one kernel launch serves every encode of the batch (issue 27).

Each encode keeps its own latents, weights, lambda and seed. The latents of an encode are
one flat row of ``latents`` (B, L), its networks one flat row of ``networks`` (B, Wn), so
that the optimizer runs over two tensors whatever the configuration; layers see views of
them as (B, out, in) matrices and every layer is one batched matrix product over
(B, features, positions) activations.

**An encode does not depend on its batch.** Its bitstream is the same bytes whether it is
trained alone or beside others, on the same device and thread count. Three rules hold it:

1. No sum over positions runs in an order the backend picks from the tensor's shape (which
   includes the batch): losses and bias gradients are added by a fixed pairwise tree of
   elementwise additions (`position_sum`); weight gradients are per-chunk matrix products of
   one fixed shape (CHUNK positions), summed by the same tree; learned-tap gradients alike.
2. Every per-encode buffer that goes through exp, log, tanh or pow holds a multiple of ALIGN
   elements and starts ALIGN-aligned, so an element never sits in a vector loop's body in one
   batch and in its scalar tail in another (torch's CPU kernels round the two differently).
3. Noise is a counter-based hash of (seed, step, position) (`hash_uniform`), not the draws
   of a generator shared by the batch; it also makes the step capturable as a CUDA graph.

This is a different training path from ``coolchic.train.overfit`` (native C++ kernels on
the CPU, the fused torch kernels of ``coolchic.model.fused`` elsewhere): the same model,
loss and recipe with other float arithmetic and other noise draws, so its bitstreams differ
from a single encode's. Its contract is: batch of 1 == batch of N, on this path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coolchic.config import CONTEXT_COLS, CONTEXT_ROWS, DecoderConfig, context_offsets, grid_shapes
from coolchic.model.coolchic import TAP_STEP, CoolChic, laplace_bits
from coolchic.model.upsampling import taps_tensor

ALIGN = 64  # elements: per-encode buffers are padded to a multiple (rule 2)
CHUNK = 512  # positions per partial product of a weight gradient (rule 1)
_MASK32 = 0xFFFFFFFF


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _tree_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis, (..., P) -> (...), in a pairwise order fixed by P alone:
    element i and i + ceil(n / 2) added, the middle one carried when n is odd, repeated."""
    while x.shape[-1] > 1:
        n = x.shape[-1]
        h = (n + 1) // 2
        pairs = x[..., : n - h] + x[..., h:]
        x = torch.cat((pairs, x[..., n - h : h]), -1) if n % 2 else pairs
    return x[..., 0]


class _PositionSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.n = x.shape[-1]
        return _tree_sum(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g.unsqueeze(-1).expand(*g.shape, ctx.n)


def position_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last axis (positions) in an order that does not depend on the other
    axes' sizes: (..., P) -> (...). Differentiable."""
    return _PositionSum.apply(x)


def _outer_sum(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_p g[:, :, p] x[:, :, p]^T: (B, out, P), (B, in, P) -> (B, out, in), as products of
    CHUNK positions (one shape, whatever B) added by `_tree_sum`."""
    b, n_out, p = g.shape
    n_in = x.shape[1]
    padded = _round_up(p, CHUNK)
    if padded != p:  # zero positions add exact zeros
        g, x = F.pad(g, (0, padded - p)), F.pad(x, (0, padded - p))
    chunks = padded // CHUNK
    # Both operands are copied to one fixed layout, chunk-major with CHUNK contiguous
    # positions (a view's strides, which a reshape keeps or not depending on B, choose the
    # matrix kernel, hence the rounding), the rows of g padded with zeros so that every
    # (rows, in) product starts 64-byte aligned: on the reference CPU, MKL rounded these
    # small products differently at other alignments.
    rows = n_out
    while rows * n_in % 16:
        rows += 1
    gc = g.reshape(b, n_out, chunks, CHUNK).transpose(1, 2)  # (B, chunks, out, CHUNK)
    gc = F.pad(gc, (0, 0, 0, rows - n_out)).reshape(b * chunks, rows, CHUNK)
    xc = x.reshape(b, n_in, chunks, CHUNK).transpose(1, 2).reshape(b * chunks, n_in, CHUNK)
    part = torch.bmm(gc.contiguous(), xc.contiguous().transpose(1, 2))  # (B * chunks, rows, in)
    part = part.view(b, chunks, rows, n_in)[:, :, :n_out]
    return _tree_sum(part.permute(0, 2, 3, 1))  # (B, out, in, chunks) -> (B, out, in)


class _Linear(torch.autograd.Function):
    """z = w @ x + b per encode: x (B, in, P), w (B, out, in), b (B, out) or None."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        # contiguous operands: one matrix kernel whatever B (see `_outer_sum`)
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        z = torch.bmm(w, x)
        return z + b.unsqueeze(-1) if b is not None else z

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        g = g.contiguous()
        gx = torch.bmm(w.transpose(1, 2).contiguous(), g) if ctx.needs_input_grad[0] else None
        gw = _outer_sum(g, x) if ctx.needs_input_grad[1] else None
        gb = _tree_sum(g) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Per-encode layer (B, in, P) -> (B, out, P) with batch-independent gradients; P must
    be a multiple of ALIGN (rule 2)."""
    if x.shape[-1] % ALIGN:
        raise ValueError(f"positions must be a multiple of {ALIGN}, got {x.shape[-1]}")
    return _Linear.apply(x, w, b)


def _replicate2(a: torch.Tensor) -> torch.Tensor:
    """(..., n) -> (..., n + 4), the edges repeated twice (slices: a deterministic adjoint)."""
    first, last = a[..., :1], a[..., -1:]
    return torch.cat((first, first, a, last, last), -1)


class _Upsample(torch.autograd.Function):
    """2x upsampling of the last axis with per-encode taps (B, 4), the filter of
    ``coolchic.model.upsampling``: output 2i reads inputs i-2 .. i+1 with the taps, 2i+1
    inputs i-1 .. i+2 with the taps reversed, edges replicated; outputs 0 .. m - 1."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, taps: torch.Tensor, m: int) -> torch.Tensor:
        n = a.shape[-1]
        ap = _replicate2(a)  # (B, K, R, n + 4)
        t = [taps[:, j].view(-1, 1, 1, 1) for j in range(4)]
        s = [ap[..., k : k + n] for k in range(5)]  # s[k][i] = input i - 2 + k
        even = t[0] * s[0] + t[1] * s[1] + t[2] * s[2] + t[3] * s[3]
        odd = t[3] * s[1] + t[2] * s[2] + t[1] * s[3] + t[0] * s[4]
        ctx.save_for_backward(ap if ctx.needs_input_grad[1] else None, taps)
        ctx.n = n
        return torch.stack((even, odd), -1).flatten(-2)[..., :m]  # (B, K, R, m)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        ap, taps = ctx.saved_tensors
        n = ctx.n
        g = F.pad(g, (0, 2 * n - g.shape[-1])).unflatten(-1, (n, 2))
        ge, go = g[..., 0], g[..., 1]  # (B, K, R, n) each
        t = [taps[:, j].view(-1, 1, 1, 1) for j in range(4)]
        gs = [t[0] * ge, t[1] * ge + t[3] * go, t[2] * ge + t[2] * go, t[3] * ge + t[1] * go, t[0] * go]
        gap = ge.new_zeros(*ge.shape[:-1], n + 4)
        for k in range(5):
            gap[..., k : k + n] += gs[k]
        ga = gap[..., 2 : n + 2].clone()  # the replicated edges folded back
        ga[..., :1] += gap[..., 0:1] + gap[..., 1:2]
        ga[..., -1:] += gap[..., n + 2 : n + 3] + gap[..., n + 3 : n + 4]
        gt = None
        if ctx.needs_input_grad[1]:
            s = [ap[..., k : k + n] for k in range(5)]
            prods = torch.stack((ge * s[0] + go * s[4], ge * s[1] + go * s[3],
                                 ge * s[2] + go * s[2], ge * s[3] + go * s[1]), 1)  # (B, 4, K, R, n)
            gt = _tree_sum(prods.flatten(2))
        return ga, gt, None


def upsample_cascade(grids: list[torch.Tensor], taps: list[torch.Tensor]) -> torch.Tensor:
    """``coolchic.model.upsampling.upsample_cascade`` per encode: grids finest first, each
    (B, 1, h_k, w_k); taps[l] (B, 4) upsamples into grid l. Returns (B, n_grids, H, W)."""
    acc = grids[-1]
    for level in range(len(grids) - 2, -1, -1):
        h, w = grids[level].shape[-2:]
        acc = _Upsample.apply(acc, taps[level], w)  # columns first, as upsample2x
        acc = _Upsample.apply(acc.transpose(-1, -2), taps[level], h).transpose(-1, -2)
        acc = torch.cat((grids[level], acc), 1)
    return acc


def _replicate1(z: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H + 2, W + 2), edges repeated once."""
    z = torch.cat((z[..., :1], z, z[..., -1:]), -1)
    return torch.cat((z[..., :1, :], z, z[..., -1:, :]), -2)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of 32-bit values held in int64 (xor-shift, multiply; products < 2^63)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x1B873593) & _MASK32
    return x ^ (x >> 16)


def hash_uniform(seeds: torch.Tensor, counter: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Uniform noise on (0, 1), float32, a pure function of (seed, counter, position): the
    same on any device and in any batch (rule 3). seeds (B, 1) int64, counter () int64,
    index (L,) int64 -> (B, L); 24 random bits per value."""
    key = _mix32(_mix32(seeds & _MASK32) ^ (counter & _MASK32))  # (B, 1)
    x = _mix32(_mix32(index ^ key) ^ key)
    return ((x >> 8).to(torch.float32) + 0.5) * 2.0**-24


def soft_round(x: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """``coolchic.quant.soft_round`` with a tensor temperature (no host value in the step)."""
    centre = torch.floor(x) + 0.5
    k = 0.5 / torch.tanh(0.5 / temperature)
    return centre + k * torch.tanh((x - centre) / temperature)


class BatchedCoolChic(nn.Module):
    """B models of one (height, width, channels, config); `model(b)` is encode b's CoolChic."""

    def __init__(self, models: Sequence[CoolChic]):
        super().__init__()
        first = models[0]
        self.config, self.height, self.width, self.channels = (first.config, first.height,
                                                               first.width, first.channels)
        for m in models:
            if (m.config, m.height, m.width, m.channels) != (self.config, self.height, self.width,
                                                             self.channels):
                raise ValueError("a batch holds models of one size and configuration")
        self.shapes = grid_shapes(self.height, self.width, self.config.latents.n_grids)
        self.n_latents = sum(h * w for h, w in self.shapes)
        self.layout = [(n, tuple(p.shape)) for n, p in first.named_parameters()
                       if not n.startswith("latents.")]
        n_weights = sum(_numel(s) for _, s in self.layout)
        lat_len, net_len = _round_up(self.n_latents, ALIGN), _round_up(n_weights, ALIGN)
        with torch.no_grad():
            lat = [torch.cat([y.reshape(-1) for y in m.latents]) for m in models]
            net = [torch.cat([p.reshape(-1) for n, p in m.named_parameters()
                              if not n.startswith("latents.")]) for m in models]
            self.latents = nn.Parameter(F.pad(torch.stack(lat), (0, lat_len - self.n_latents)))
            self.networks = nn.Parameter(F.pad(torch.stack(net), (0, net_len - n_weights)))
        valid = torch.zeros(lat_len)
        valid[: self.n_latents] = 1.0
        self.register_buffer("valid", valid)  # 1.0 on latents, 0.0 on padding
        self.register_buffer("bicubic", taps_tensor(None, torch.float32))

    @classmethod
    def from_seeds(cls, config: DecoderConfig, height: int, width: int, channels: int,
                   seeds: Sequence[int], *, synthesis_gain: float = 1.0) -> BatchedCoolChic:
        """The initial models of `coolchic.train.overfit` (``torch.manual_seed(seed)``, then
        ``CoolChic``), one per seed; the global generator is left as it was."""
        models = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                models.append(CoolChic(config, height, width, channels, synthesis_gain=synthesis_gain))
        return cls(models)

    @property
    def batch(self) -> int:
        return self.latents.shape[0]

    def weights(self, networks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each parameter of the networks as a (B, *shape) view of `networks`."""
        flat = self.networks if networks is None else networks
        out, offset = {}, 0
        for name, shape in self.layout:
            n = _numel(shape)
            out[name] = flat[:, offset : offset + n].view(-1, *shape)
            offset += n
        return out

    def grids(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) latents -> [(B, 1, h_k, w_k)], finest first."""
        out, offset = [], 0
        for h, w in self.shapes:
            out.append(flat[:, offset : offset + h * w].view(-1, 1, h, w))
            offset += h * w
        return out

    def _taps(self, wts: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """(B, 4) taps of each level (``LearnedTaps``), sums written out (rule 1)."""
        levels = self.config.latents.n_grids - 1
        if "upsampling.p" not in wts:
            return [self.bicubic.expand(self.batch, 4)] * levels
        t = self.bicubic + TAP_STEP * wts["upsampling.p"]  # (B, levels, 4)
        total = t[..., 0] + t[..., 1] + t[..., 2] + t[..., 3]
        taps = torch.stack([t[..., j] / total for j in range(4)], -1)
        return [taps[:, level] for level in range(levels)]

    def loss_terms(self, q: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(MSE on [0, 1] (B,), latent rate in bits (B,)) of quantized latents q (B, L)
        against image (B, C, H, W): ``CoolChic.loss_terms`` per encode."""
        wts = self.weights()
        grids = self.grids(q)
        return self._mse(grids, image, wts), self._rate(q, grids, wts)

    def _rate(self, q: torch.Tensor, grids: list[torch.Tensor], wts: dict) -> torch.Tensor:
        contexts = []
        for (h, w), g in zip(self.shapes, grids):
            gp = F.pad(g[:, 0], (CONTEXT_COLS, CONTEXT_COLS, CONTEXT_ROWS, 0))  # (B, h + 2, w + 4)
            r, c = CONTEXT_ROWS, CONTEXT_COLS
            views = [gp[:, r + dr : r + dr + h, c + dc : c + dc + w]
                     for dr, dc in context_offsets(self.config.arm.context)]
            contexts.append(torch.stack(views, 1).flatten(2))  # (B, context, h * w)
        x = F.pad(torch.cat(contexts, 2), (0, q.shape[1] - self.n_latents))  # (B, context, L)
        n_layers = len(self.config.arm.hidden) + 1
        for i in range(n_layers):
            x = linear(x, wts[f"arm.layers.{i}.weight"], wts[f"arm.layers.{i}.bias"])
            if i < n_layers - 1:
                x = torch.relu(x)
        bits = laplace_bits(q, x[:, 0], x[:, 1])  # (B, L)
        return position_sum(bits * self.valid)

    def _mse(self, grids: list[torch.Tensor], image: torch.Tensor, wts: dict) -> torch.Tensor:
        h, w = self.height, self.width
        positions = _round_up(h * w, ALIGN)
        x = upsample_cascade(grids, self._taps(wts))  # (B, n_grids, H, W)
        x = F.pad(x.flatten(2), (0, positions - h * w))  # (B, n_grids, positions)
        n_mlp = len(self.config.synthesis.hidden) + 1
        for i in range(n_mlp):
            x = linear(x, wts[f"synthesis.mlp.{i}.weight"], wts[f"synthesis.mlp.{i}.bias"])
            if i < n_mlp - 1:
                x = torch.relu(x)
        z = x[..., : h * w].unflatten(2, (h, w))  # (B, C, H, W)
        for j in range(self.config.synthesis.residual_convs):
            zp = _replicate1(z)
            cols = torch.stack([zp[..., ky : ky + h, kx : kx + w] for ky in range(3) for kx in range(3)], 2)
            cols = F.pad(cols.flatten(1, 2).flatten(2), (0, positions - h * w))  # (B, C * 9, positions)
            wt = wts[f"synthesis.residual.{j}.weight"].flatten(2)  # (B, C, C * 9): in-major, then (ky, kx)
            conv = linear(cols, wt, wts[f"synthesis.residual.{j}.bias"])
            z = z + conv[..., : h * w].unflatten(2, (h, w))
        diff = z - image
        return position_sum((diff * diff).flatten(1)) / diff[0].numel()

    def model(self, b: int) -> CoolChic:
        """Encode b's model as a CoolChic on the CPU (float32)."""
        m = CoolChic(self.config, self.height, self.width, self.channels)
        state = m.state_dict()  # the buffers (bicubic base taps) as built
        state.update({f"latents.{k}": g[b : b + 1].detach().cpu()
                      for k, g in enumerate(self.grids(self.latents.detach()))})
        state.update({n: t[b].detach().cpu() for n, t in self.weights(self.networks.detach()).items()})
        m.load_state_dict(state)
        return m


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
