"""The native (C++) training kernels of ``kernels.cpp``: built when the package is
installed, and called through ctypes on CPU tensors.

They compute the same functions as the torch kernels of ``coolchic.model.fused`` (tests
compare them in float64), several times faster on the CPU: the layers are a dozen wide,
so the work is bound by memory traffic and per-operation overhead, which a single pass per
block of positions avoids. Where no library could be built `library` returns None, with the
reason in `unavailable_reason`, and training runs the torch kernels (whose float arithmetic,
and so whose bitstream, differs); COOLCHIC_NATIVE=0 in the environment disables them.

Building, CPU variants and loading: `coolchic.nativebuild` (compiled with -ffast-math,
linked without it).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from coolchic import nativebuild

SOURCE = Path(__file__).with_name("kernels.cpp")
VERSION = 4  # coolchic_kernels_version() of SOURCE
FLAGS = nativebuild.SOURCES["model/kernels.cpp"]
_I64, _F64, _PTR = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
MAX_CHANNELS = 4  # image channels the native synthesis handles


PARTS = 4  # PARTS of kernels.cpp: the most threads a kernel call uses
_threads = 1  # threads of kernel calls; set by `threads`


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the kernel calls inside on `n` threads (at most PARTS), then restore. The
    kernels split their work into PARTS fixed parts summed in a fixed order, so the
    results are the same bits whatever the thread count. The threads are joined, not
    spun on: with another process on a core, 2 threads cost about what 1 does."""
    global _threads
    before, _threads = _threads, max(1, min(PARTS, int(n)))
    try:
        yield
    finally:
        _threads = before


def kernel_threads(n: int | None = None) -> int:
    """Threads of a kernel call: `n`, else the setting of `threads` (1 outside it)."""
    return _threads if n is None else max(1, min(PARTS, n))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class Library:
    """The loaded kernels; arguments are contiguous CPU tensors of one dtype (float32 or
    float64; gradients of parameters always float64)."""

    def __init__(self, cdll: ctypes.CDLL):
        self._cdll = cdll
        arm = [_PTR, _PTR, _I64, _I64, _PTR, ctypes.c_int, _PTR, _PTR, _F64, _F64, _F64, _PTR, _PTR,
               ctypes.c_int]
        syn = [_PTR, _PTR, _I64, _I64, _PTR, _I64, _I64, _I64, ctypes.c_int, _PTR, _PTR,
               ctypes.c_int, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, ctypes.c_int]
        soft = [_PTR, _PTR, _I64, _F64, _F64, _F64, _PTR, _PTR, ctypes.c_int]
        up = [ctypes.c_int, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR]
        for suffix in ("f32", "f64"):
            for name, args, result in (("arm_rate", arm, _F64), ("synthesis_mse", syn, _F64),
                                        ("soft_round_noise", soft, None), ("upsample_stack", up, None)):
                fn = getattr(cdll, f"coolchic_{name}_{suffix}")
                fn.argtypes, fn.restype = args, result

    @staticmethod
    def supports(t: torch.Tensor) -> bool:
        return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)

    def _fn(self, name: str, dtype: torch.dtype):
        return getattr(self._cdll, f"coolchic_{name}_{'f32' if dtype == torch.float32 else 'f64'}")

    def arm_rate(self, canvas: torch.Tensor, valid: torch.Tensor, start: int, n: int,
                 offsets: list[int], widths: list[int], params: torch.Tensor,
                 log_scale_range: tuple[float, float], min_prob: float,
                 grad_canvas: torch.Tensor | None, grad_params: torch.Tensor | None) -> float:
        """Bits of the latents at flat positions start .. start + n - 1 of `canvas` (context
        at the flat `offsets`, `valid` 1.0 on latents); adds the gradients to `grad_canvas`
        and `grad_params` (packed as `params`: each layer's weight then bias) unless None.
        Runs on `kernel_threads()` threads; the result does not depend on them."""
        offs = torch.tensor(offsets, dtype=torch.int64)
        wid = torch.tensor(widths, dtype=torch.int64)
        return self._fn("arm_rate", canvas.dtype)(
            _ptr(canvas), _ptr(valid), start, n, _ptr(offs), len(widths) - 1, _ptr(wid),
            _ptr(params), *log_scale_range, min_prob, _ptr(grad_canvas), _ptr(grad_params),
            kernel_threads())

    def synthesis_mse(self, finest: torch.Tensor, coarser: torch.Tensor | None, image: torch.Tensor,
                      widths: list[int], mlp: torch.Tensor, n_conv: int, conv: torch.Tensor,
                      band_rows: int, grads: tuple | None, vtaps: torch.Tensor,
                      grad_vtaps: torch.Tensor | None = None) -> float:
        """Sum of squared errors of the synthesis (see ``fused.synthesis_mse``); `mlp` and
        `conv` pack each layer's weight then bias; `grads` = (finest's, coarser's, mlp's,
        conv's) receive the gradients of the mean squared error, or None; `vtaps` (4,
        float64) are the taps of the last vertical 2x pass, `grad_vtaps` (4, float64)
        receives their gradient unless None. Runs on `kernel_threads()` threads; the result
        does not depend on them."""
        _, c, h, w = image.shape
        k, hc = (0, 1) if coarser is None else coarser.shape[1:3]
        wid = torch.tensor(widths, dtype=torch.int64)
        g = (None,) * 4 if grads is None else grads
        return self._fn("synthesis_mse", finest.dtype)(
            _ptr(finest), _ptr(coarser), k, hc, _ptr(image), c, h, w, len(widths) - 1, _ptr(wid),
            _ptr(mlp), n_conv, _ptr(conv), band_rows, *(_ptr(t) for t in g), _ptr(vtaps),
            _ptr(grad_vtaps), kernel_threads())


    def upsample_stack(self, grids: list[torch.Tensor], width: int, taps: torch.Tensor,
                       out: torch.Tensor | None = None, grad_out: torch.Tensor | None = None,
                       grads: list[torch.Tensor] | None = None,
                       grad_taps: torch.Tensor | None = None) -> None:
        """The cascade of ``fused.upsample_stack`` (grids (h_k, w_k) contiguous, each w_k
        and h_k half the previous one rounded up, `width` 2 w_0 or 2 w_0 - 1; `taps` (K, 4)
        float64, row l the taps of the step into grid l, row 0 the last horizontal pass)
        into `out` (K, h_0, width); or, given `grad_out`, its adjoint into `grads`, and the
        taps' gradient added to `grad_taps` ((K, 4) float64) unless None."""
        shapes = torch.tensor([s for g in grids for s in g.shape[-2:]], dtype=torch.int64)
        ptrs = torch.tensor([g.data_ptr() for g in grids], dtype=torch.int64)
        gptrs = None if grads is None else torch.tensor([g.data_ptr() for g in grads], dtype=torch.int64)
        self._fn("upsample_stack", grids[0].dtype)(len(grids), _ptr(shapes), width, _ptr(taps), _ptr(ptrs),
                                                   _ptr(out), _ptr(grad_out), _ptr(gptrs), _ptr(grad_taps))

    def soft_round_noise(self, y: torch.Tensor, u: torch.Tensor, temperature: float,
                         shape: tuple[float, float], q: torch.Tensor, dq: torch.Tensor) -> None:
        """q = soft-rounded (soft-rounded y plus Kumaraswamy noise of shape (a, b) drawn by
        inverting the CDF at the uniform u), and dq/dy; see ``coolchic.quant``. With a == 0,
        u is the noise itself (Gaussian noise drawn by the caller)."""
        self._fn("soft_round_noise", y.dtype)(_ptr(y), _ptr(u), y.numel(), temperature, *shape,
                                              _ptr(q), _ptr(dq), kernel_threads())


@functools.cache
def _load() -> Library | str:
    cdll = nativebuild.load(SOURCE, flags=FLAGS, version_symbol="coolchic_kernels_version",
                            version=VERSION)
    return Library(cdll) if isinstance(cdll, ctypes.CDLL) else cdll


def library() -> Library | None:
    """The native kernels, or None when none are installed (or built) for this CPU."""
    lib = _load()
    return lib if isinstance(lib, Library) else None


def unavailable_reason() -> str | None:
    """Why `library` returns None (None when it does not)."""
    lib = _load()
    return None if isinstance(lib, Library) else lib
