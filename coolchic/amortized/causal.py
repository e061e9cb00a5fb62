"""Causal order of 3-D codes, the masks of masked 3-D convolutions, and the wavefront schedule.

A code tensor has shape (C, H, W): C code channels (the third dimension of the "3-D" codes
of Li et al., CVPR 2018 and TIP 2020, and Mentzer et al., CVPR 2018), H rows, W columns.
A code position is p = (c, y, x).

**Order.** A `WaveOrder` gives every position an integer wave

    w(c, y, x) = a[c] + row_step * y + col_step * x

with one offset a[c] per channel. The entropy model of a code may use exactly the codes of
earlier waves; codes of one wave never depend on each other, so they are decoded in
parallel (one network evaluation and one entropy-decoder call per wave). Examples:

* `WaveOrder.zigzag`: a[c] = c, row_step = col_step = 1, i.e. the 3-D zig-zag order of
  Li et al. (TIP 2020): the codes of one hyperplane c + y + x = t form a sub-block decoded
  in parallel;
* `WaveOrder.progressive`: whole layers of `layer_depth` channels one after another, a
  3-D zig-zag inside a layer; a code sees every code of the earlier layers within the
  kernel (Johnston et al., arXiv 1703.10114, code progressively refined layer by layer);
* `WaveOrder.channel_major`: channel after channel, raster-like inside a channel (the
  raster 3-D order of Mentzer et al., CVPR 2018, made parallel along anti-diagonals).

**Masks.** A masked convolution maps `group_in` features per code position to `group_out`
features per code position: input channel i belongs to code channel i // group_in, output
channel o to code channel o // group_out (blocks of consecutive channels), so a layer has
C * group_in inputs and C * group_out outputs (Li et al., TIP 2020: num_output = channels x
group_out). The kernel is kh x kw (odd sizes) over rows and columns and reaches code channels
within `depth` of its own (all channels when depth is None). Kernel tap (ky, kx) reads the
spatial offset (dy, dx) = (ky - kh // 2, kx - kw // 2). With

    delta = w(c_i, y + dy, x + dx) - w(c_o, y, x) = a[c_i] - a[c_o] + row_step*dy + col_step*dx

(independent of (y, x), so the mask is translation invariant):

    mask[o, i, ky, kx] = 1  iff  |c_i - c_o| <= depth  and  delta <  0   (constrain = 5)
    mask[o, i, ky, kx] = 1  iff  |c_i - c_o| <= depth  and  delta <= 0   (constrain = 6)

Constrain 5 is for the input layer (a code never sees itself or its own wave); constrain 6
for hidden and output layers. Why 6 is causal: by induction over layers, a feature at p
depends only on codes of waves < w(p); a constrain-6 layer at p reads features at positions
q with w(q) <= w(p), which depend on codes of waves < w(q) <= w(p). (The numbers 5 and 6 are
the values of the `constrain` parameter in Li et al.'s description; only these two exist
here.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Constrain = Literal[5, 6]
CONSTRAIN_INPUT: Constrain = 5  # strict: earlier waves only
CONSTRAIN_HIDDEN: Constrain = 6  # earlier waves and the position's own wave
_CONSTRAINS = (CONSTRAIN_INPUT, CONSTRAIN_HIDDEN)


@dataclass(frozen=True)
class WaveOrder:
    """w(c, y, x) = channel_offsets[c] + row_step * y + col_step * x; see the module docstring."""

    channel_offsets: tuple[int, ...]  # a[c], one per code channel; waves are integers
    row_step: int  # waves per row, >= 0
    col_step: int  # waves per column, >= 0

    def __post_init__(self) -> None:
        if not self.channel_offsets:
            raise ValueError("a WaveOrder needs at least one channel")
        if self.row_step < 0 or self.col_step < 0:
            raise ValueError(f"row_step and col_step must be >= 0, got {self.row_step}, "
                             f"{self.col_step}")
        if min(self.channel_offsets) < 0:
            raise ValueError("channel offsets must be >= 0")

    @property
    def channels(self) -> int:
        return len(self.channel_offsets)

    @classmethod
    def zigzag(cls, channels: int) -> WaveOrder:
        """The 3-D zig-zag order w = c + y + x (Li et al., TIP 2020)."""
        return cls(tuple(range(channels)), 1, 1)

    @classmethod
    def progressive(cls, *, layer_count: int, layer_depth: int, radius: int) -> WaveOrder:
        """Layer after layer; within a layer of `layer_depth` channels, w = j + y + x.

        The layer stride exceeds (layer_depth - 1) + 2 * radius, so every tap of a kernel
        of that spatial radius that reads an earlier layer is earlier in the order: a code
        sees the whole kernel window of every earlier layer, and, of its own layer, the
        3-D zig-zag causal part.
        """
        if layer_count < 1 or layer_depth < 1 or radius < 0:
            raise ValueError("layer_count and layer_depth must be >= 1 and radius >= 0")
        stride = layer_depth + 2 * radius
        offsets = tuple(layer * stride + j for layer in range(layer_count) for j in range(layer_depth))
        return cls(offsets, 1, 1)

    @classmethod
    def channel_major(cls, channels: int, *, radius: int) -> WaveOrder:
        """Channel after channel; inside a channel w = 2y + x.

        Of its own channel a code sees the taps with 2*dy + dx < 0 (for radius 1: the three
        above and the one to the left); the channel stride 3 * radius + 1 makes the whole
        window of earlier channels visible.
        """
        if radius < 0:
            raise ValueError("radius must be >= 0")
        stride = 3 * radius + 1
        return cls(tuple(c * stride for c in range(channels)), 2, 1)

    def waves(self, c: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Wave of each position; int64 arrays of one shape in, the same shape out."""
        a = np.asarray(self.channel_offsets, dtype=np.int64)
        return a[c] + self.row_step * np.asarray(y, np.int64) + self.col_step * np.asarray(x, np.int64)

    def n_waves(self, height: int, width: int) -> int:
        """1 + the largest wave of an (C, height, width) code."""
        return max(self.channel_offsets) + self.row_step * (height - 1) + self.col_step * (width - 1) + 1


def _check_constrain(constrain: int) -> None:
    if constrain not in _CONSTRAINS:
        raise ValueError(f"constrain must be one of {_CONSTRAINS}, got {constrain!r}")


def conv_mask(
    order: WaveOrder,
    kernel_size: tuple[int, int],
    *,
    constrain: Constrain,
    group_in: int = 1,
    group_out: int = 1,
    depth: int | None = None,
) -> np.ndarray:
    """The mask of a masked 3-D convolution, as defined in the module docstring.

    Args:
        order: causal order of the code; gives C = order.channels.
        kernel_size: (kh, kw), odd.
        constrain: 5 (input layer, strict) or 6 (hidden layers).
        group_in, group_out: features per code position at the input and the output.
        depth: largest |c_i - c_o| read, or None for all channels.

    Returns:
        bool (C * group_out, C * group_in, kh, kw).
    """
    _check_constrain(constrain)
    kh, kw = kernel_size
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if group_in < 1 or group_out < 1:
        raise ValueError("group_in and group_out must be >= 1")
    if depth is not None and depth < 0:
        raise ValueError("depth must be >= 0 or None")
    a = np.asarray(order.channel_offsets, dtype=np.int64)
    dy = np.arange(kh) - kh // 2
    dx = np.arange(kw) - kw // 2
    # (C_out, C_in, kh, kw) wave difference of every tap
    delta = (a[None, :, None, None] - a[:, None, None, None]
             + order.row_step * dy[None, None, :, None] + order.col_step * dx[None, None, None, :])
    allowed = delta < 0 if constrain == CONSTRAIN_INPUT else delta <= 0
    if depth is not None:
        c = np.arange(order.channels)
        allowed &= (np.abs(c[None, :] - c[:, None]) <= depth)[:, :, None, None]
    # expand code channels to feature channels: (C * group_out, C * group_in, kh, kw)
    return np.repeat(np.repeat(allowed, group_out, axis=0), group_in, axis=1)


@dataclass(frozen=True)
class Wavefront:
    """Which codes are decoded together: the coded positions sorted by (wave, c, y, x).

    Wave k of the schedule is ``c[bounds[k]:bounds[k+1]]`` (same for y, x): positions of one
    wave of the order, empty waves dropped. The encoder codes all symbols in this order; the
    decoder decodes one wave at a time.
    """

    shape: tuple[int, int, int]  # (C, H, W) of the code
    c: np.ndarray  # (N,) int64 code channel of each coded position, in coding order
    y: np.ndarray  # (N,) int64 row
    x: np.ndarray  # (N,) int64 column
    bounds: np.ndarray  # (n_waves + 1,) int64

    @classmethod
    def build(cls, order: WaveOrder, shape: tuple[int, int, int],
              coded: np.ndarray | None = None) -> Wavefront:
        """Schedule the positions of a (C, H, W) code.

        Args:
            order: the causal order; order.channels must equal C.
            shape: (C, H, W).
            coded: optional bool (C, H, W): only these positions are coded (the others are
                known to both sides, e.g. trimmed by an importance map or beyond
                coded_layer_count).
        """
        n_c, h, w = shape
        if n_c != order.channels:
            raise ValueError(f"the order has {order.channels} channels, the code {n_c}")
        if h < 1 or w < 1:
            raise ValueError(f"empty code shape {shape}")
        if coded is None:
            flat = np.arange(n_c * h * w, dtype=np.int64)
        else:
            if coded.shape != tuple(shape):
                raise ValueError(f"coded mask has shape {coded.shape}, expected {tuple(shape)}")
            flat = np.flatnonzero(coded).astype(np.int64)
        c, rem = np.divmod(flat, h * w)
        y, x = np.divmod(rem, w)
        wave = order.waves(c, y, x)
        sort = np.argsort(wave, kind="stable")  # flat index already increases: ties by (c, y, x)
        wave = wave[sort]
        starts = np.flatnonzero(np.diff(wave)) + 1
        bounds = np.concatenate(([0], starts, [wave.size])).astype(np.int64)
        if wave.size == 0:
            bounds = np.zeros(1, dtype=np.int64)
        return cls(tuple(shape), c[sort], y[sort], x[sort], bounds)

    @property
    def n_waves(self) -> int:
        return self.bounds.size - 1

    @property
    def size(self) -> int:
        return self.c.size

    def wave(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(c, y, x) of the positions of wave k, each (n_k,) int64."""
        s = slice(self.bounds[k], self.bounds[k + 1])
        return self.c[s], self.y[s], self.x[s]

    def flat(self) -> np.ndarray:
        """(N,) int64 flat index c*H*W + y*W + x of every coded position, in coding order."""
        _, h, w = self.shape
        return (self.c * h + self.y) * w + self.x
