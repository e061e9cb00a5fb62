"""THE decoder-side context network of the amortized codecs: masked convolutions in exact integers.

The encoder and the decoder both call `IntegerContextNet.evaluate`; nothing else decides the
logits (hence, through `probability.pmf_from_logits`, the PMFs) a code is coded with.

Arithmetic (all values are integers held in float64, so BLAS does the sums):

* inputs: one integer per code position (e.g. +-1 for a bit, 0 where no code is), with
  |input| <= input_max, at 0 fractional bits;
* layer l has integer weights W (|W| <= WEIGHT_MAX, zero outside its causal mask) at
  w_frac fractional bits and integer biases B at b_frac; with A = w_frac + (fractional bits
  of its input): acc = W * a + floor(B * 2^(A - b_frac));
* a hidden layer outputs clip(floor(acc * 2^(ACT_FRAC - A)), 0, ACT_MAX) (a bounded ReLU);
* the last layer outputs logits floor(acc * 2^(LOGIT_FRAC - A)), clipped to +-LOGIT_MAX.

Exactness: the constructor checks, for every output unit, sum|W| * (largest input) +
|scaled bias| < 2^53 with Python integers. Then every product and every partial sum is an
integer below 2^53, exactly representable, so the result does not depend on the order of
the additions (BLAS blocking, thread count, CPU). Scaling by a power of two and floor are
exact as well.

Incremental evaluation: a code at wave t depends on features of waves <= t only (see
`causal`). `evaluate` computes, layer by layer, the features of the requested positions and
stores them, so the decoder evaluates one wave after another (each position once), while
the encoder may evaluate all positions at once from the complete code: the masks guarantee
that both read the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coolchic.amortized.causal import CONSTRAIN_HIDDEN, CONSTRAIN_INPUT, WaveOrder, conv_mask
from coolchic.amortized.probability import LOGIT_FRAC

ACT_FRAC = 8  # fractional bits of hidden activations
ACT_MAX = 1 << 20  # hidden activations are clipped to [0, ACT_MAX]
WEIGHT_MAX = 1 << 15  # integer weights lie in [-WEIGHT_MAX, WEIGHT_MAX]
BIAS_MAX = 1 << 31  # integer biases lie in [-BIAS_MAX, BIAS_MAX]
MAX_FRAC = 20  # largest fractional-bit count of a weight or bias step
LOGIT_MAX = 1 << 16  # logits are clipped to [-LOGIT_MAX, LOGIT_MAX]
INPUT_MAX = 1 << 15  # default bound of |input|
EXACT_LIMIT = 1 << 53  # float64 holds every integer below this exactly
BATCH_ROWS = 2048  # positions per BLAS call: bounds the memory of a gathered context


@dataclass(frozen=True)
class IntLayer:
    """One quantized masked convolution: real weight = weight * 2^-w_frac, bias likewise."""

    weight: np.ndarray  # int64 (C * group_out, C * group_in, kh, kw), zero outside the mask
    bias: np.ndarray  # int64 (C * group_out,)
    w_frac: int  # 0..MAX_FRAC
    b_frac: int  # 0..MAX_FRAC


def _scaled_bias(bias: np.ndarray, shift: int) -> list[int]:
    """floor(bias * 2^shift) as exact Python integers."""
    return [b << shift if shift >= 0 else b >> -shift for b in map(int, bias)]


@dataclass(frozen=True)
class _Prepared:
    """Per code channel c: its taps and float64 matrices, ready for one gather and one GEMM."""

    taps: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]  # (c_in, dy, dx), each (T_c,)
    matrices: tuple[np.ndarray, ...]  # (T_c * group_in, group_out) float64
    biases: tuple[np.ndarray, ...]  # (group_out,) float64, at the accumulator's scale
    shift: float  # 2^(out_frac - acc_frac)
    group_in: int
    group_out: int


class IntegerContextNet:
    """A stack of masked 3-D convolutions with integer weights, evaluated exactly.

    Args:
        order: the causal order the masks follow; C = order.channels.
        layers: input layer first (constrain 5), then the others (constrain 6); the last
            layer's group_out is the number of logits per code.
        input_max: bound of |input| the caller guarantees (checked in `set_inputs`).

    Raises:
        ValueError: a weight outside its mask or range, inconsistent shapes, or a layer
            whose sums could reach 2^53.
    """

    def __init__(self, order: WaveOrder, layers: Sequence[IntLayer], *, input_max: int = INPUT_MAX):
        if not layers:
            raise ValueError("an IntegerContextNet needs at least one layer")
        self.order, self.layers, self.input_max = order, tuple(layers), input_max
        n_c = order.channels
        self.kernel_size = layers[0].weight.shape[2:]
        self.pad = max(max(layer.weight.shape[2], layer.weight.shape[3]) for layer in layers) // 2
        self._prepared = []
        group_in, in_frac, in_max = 1, 0, input_max
        for index, layer in enumerate(layers):
            n_out, n_in, kh, kw = layer.weight.shape
            if n_in != n_c * group_in or n_out % n_c:
                raise ValueError(f"layer {index}: weight shape {layer.weight.shape} does not fit "
                                 f"{n_c} code channels with {group_in} input features each")
            if layer.bias.shape != (n_out,):
                raise ValueError(f"layer {index}: bias shape {layer.bias.shape}, expected ({n_out},)")
            if not (0 <= layer.w_frac <= MAX_FRAC and 0 <= layer.b_frac <= MAX_FRAC):
                raise ValueError(f"layer {index}: fractional bits must lie in 0..{MAX_FRAC}")
            if (np.abs(layer.weight).max(initial=0) > WEIGHT_MAX
                    or np.abs(layer.bias).max(initial=0) > BIAS_MAX):
                raise ValueError(f"layer {index}: weights or biases out of range")
            group_out = n_out // n_c
            constrain = CONSTRAIN_INPUT if index == 0 else CONSTRAIN_HIDDEN
            mask = conv_mask(order, (kh, kw), constrain=constrain, group_in=group_in, group_out=group_out)
            if np.any(layer.weight[~mask]):
                raise ValueError(f"layer {index}: a weight lies outside the causal mask "
                                 f"(constrain {constrain})")
            acc_frac = layer.w_frac + in_frac
            bias = _scaled_bias(layer.bias, acc_frac - layer.b_frac)
            row_sums = np.abs(layer.weight).reshape(n_out, -1).sum(axis=1)  # < 2^15 * fan-in
            worst = max(int(s) * in_max + abs(b) for s, b in zip(row_sums, bias))
            if worst >= EXACT_LIMIT:
                raise ValueError(f"layer {index}: sums may reach {worst.bit_length()} bits; "
                                 "exact float64 evaluation needs < 2^53")
            last = index == len(layers) - 1
            out_frac = LOGIT_FRAC if last else ACT_FRAC
            shift = 2.0 ** (out_frac - acc_frac)
            self._prepared.append(self._prepare(layer, group_in, group_out, bias, shift))
            group_in, in_frac, in_max = group_out, ACT_FRAC, ACT_MAX
        self.outputs = group_in  # logits per code

    def _prepare(self, layer: IntLayer, group_in: int, group_out: int, bias: list[int],
                 shift: float) -> _Prepared:
        n_c = self.order.channels
        kh, kw = layer.weight.shape[2:]
        # (C_out, group_out, C_in, group_in, kh, kw) -> does any weight of a block live?
        blocks = layer.weight.reshape(n_c, group_out, n_c, group_in, kh, kw)
        live = np.any(blocks != 0, axis=(1, 3))  # (C_out, C_in, kh, kw)
        taps, matrices, biases = [], [], []
        for c in range(n_c):
            c_in, ky, kx = np.nonzero(live[c])  # (T,) each
            taps.append((c_in, ky - kh // 2 + self.pad, kx - kw // 2 + self.pad))
            w = blocks[c][:, c_in, :, ky, kx]  # (T, group_out, group_in)
            matrices.append(np.ascontiguousarray(w.transpose(0, 2, 1).reshape(-1, group_out),
                                                 dtype=np.float64))
            biases.append(np.array(bias[c * group_out : (c + 1) * group_out], dtype=np.float64))
        return _Prepared(tuple(taps), tuple(matrices), tuple(biases), shift, group_in, group_out)

    def start(self, height: int, width: int) -> list[np.ndarray]:
        """Fresh feature buffers of a (C, height, width) code: every input 0.

        Returns:
            One float64 array per layer input, (C, height + 2p, width + 2p, group) with p
            the largest kernel radius; zero borders are the padding.
        """
        p = self.pad
        return [np.zeros((self.order.channels, height + 2 * p, width + 2 * p, prep.group_in))
                for prep in self._prepared]

    def set_inputs(self, state: list[np.ndarray], c: np.ndarray, y: np.ndarray, x: np.ndarray,
                   values: np.ndarray) -> None:
        """Write the network inputs of positions (c, y, x) ((N,) int64 each; values (N,) ints)."""
        values = np.asarray(values)
        if values.size and np.abs(values).max() > self.input_max:
            raise ValueError(f"inputs must lie in [-{self.input_max}, {self.input_max}]")
        state[0][c, y + self.pad, x + self.pad, 0] = values

    def evaluate(self, state: list[np.ndarray], c: np.ndarray, y: np.ndarray,
                 x: np.ndarray) -> np.ndarray:
        """Logits of positions (c, y, x); stores their hidden features in `state`.

        Every input of an earlier wave than a requested position, and the hidden features of
        the positions of earlier waves (or of the same wave, earlier in this call or already
        evaluated) that it reads, must be in `state`: the decoder calls this once per wave,
        the encoder once for every position.

        Returns:
            int64 (N, outputs), in units of 2^-LOGIT_FRAC.
        """
        n = c.size
        p = self.pad
        logits = np.empty((n, self.outputs), dtype=np.float64)
        by_channel = np.argsort(c, kind="stable")
        splits = np.flatnonzero(np.diff(c[by_channel])) + 1
        groups = [g for g in np.split(by_channel, splits) if g.size]
        last = len(self._prepared) - 1
        for index, prep in enumerate(self._prepared):
            source = state[index]
            for group in groups:
                ch = int(c[group[0]])
                tc, ty, tx = prep.taps[ch]
                for start in range(0, group.size, BATCH_ROWS):
                    rows = group[start : start + BATCH_ROWS]
                    yy, xx = y[rows], x[rows]
                    # (n, T, group_in) -> (n, T * group_in): the context of every position
                    ctx = source[tc[None, :], yy[:, None] + ty[None, :], xx[:, None] + tx[None, :]]
                    acc = ctx.reshape(rows.size, -1) @ prep.matrices[ch]  # (n, group_out)
                    acc += prep.biases[ch]
                    acc *= prep.shift
                    np.floor(acc, out=acc)
                    if index == last:
                        logits[rows] = acc
                    else:
                        acc.clip(0.0, ACT_MAX, out=acc)
                        state[index + 1][ch, yy + p, xx + p, :] = acc
        np.clip(logits, -LOGIT_MAX, LOGIT_MAX, out=logits)
        return logits.astype(np.int64)


def quantize_layers(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> list[IntLayer]:
    """Round float layers to `IntLayer`s with the finest step that fits the integer range.

    Args:
        weights: float (C*g_out, C*g_in, kh, kw) per layer, already zero outside the mask.
        biases: float (C*g_out,) per layer.

    Returns:
        One IntLayer per layer; w_frac = the largest f <= MAX_FRAC with
        max|w| * 2^f <= WEIGHT_MAX (likewise b_frac), values rounded half to even.
    """
    def frac(values: np.ndarray, limit: int) -> int:
        top = float(np.abs(values).max(initial=0.0))
        if top == 0.0:
            return MAX_FRAC
        return int(max(0, min(MAX_FRAC, np.floor(np.log2(limit / top)))))

    layers = []
    for w, b in zip(weights, biases):
        w, b = np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)
        w_frac, b_frac = frac(w, WEIGHT_MAX), frac(b, WEIGHT_MAX)
        layers.append(IntLayer(np.rint(w * 2.0**w_frac).astype(np.int64),
                               np.rint(b * 2.0**b_frac).astype(np.int64), w_frac, b_frac))
    return layers
