"""Bitstream -> image: the container's parse and checks, then the latents, then the
synthesis. `decode` and `describe` are the package's decoding entry points (also as
`coolchic.decode`). Imports no training code and no optimizer, and no torch on the CPU
(tested): the decoder is the header parser, the entropy decoder, the integer ARM and the
fixed-point synthesis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coolchic.bitstream import BitstreamError, CodecId, Header, SectionId, read_bitstream
from coolchic.complexity import MacCount, mac_per_pixel
from coolchic.config import DecoderConfig, grid_shapes
from coolchic.decoder.dispatch import Kernel, check_device, decode_latents, synthesize
from coolchic.entropy.coder import EntropyError
from coolchic.entropy.fixedpoint import LATENT_MAX, IntegerArm
from coolchic.entropy.latents import buffer_layout
from coolchic.payload import prior_id_of, unpack_config, unpack_weights

REQUIRED_SECTIONS = (SectionId.CONFIG, SectionId.WEIGHTS, SectionId.LATENTS)
# This decoder's memory grows with the pixel count (about 0.5 kB per pixel at most), so it
# refuses larger images before allocating anything; the encoder refuses them too.
DECODER_MAX_PIXELS = 1 << 26


def _read(data: bytes | str | Path) -> bytes:
    if isinstance(data, (str, Path)):
        try:
            return Path(data).read_bytes()
        except OSError as exc:
            raise BitstreamError(f"cannot read {data}: {exc.strerror or exc}") from None
    return bytes(data)


@dataclass(frozen=True)
class BitstreamInfo:
    """What `coolchic info` shows."""

    header: Header
    config: DecoderConfig
    section_bytes: dict[str, int]
    total_bytes: int
    macs: MacCount
    weight_prior: int  # the registered weight prior the WEIGHTS section names (0: none)

    @property
    def bpp(self) -> float:
        return 8.0 * self.total_bytes / (self.header.height * self.header.width)


def _parse(data: bytes) -> tuple[Header, dict[int, bytes], DecoderConfig]:
    return _parse_sections(*read_bitstream(data))


def _parse_sections(header: Header, sections: dict[int, bytes]
                    ) -> tuple[Header, dict[int, bytes], DecoderConfig]:
    if header.height * header.width > DECODER_MAX_PIXELS:
        raise BitstreamError(
            f"a {header.width}x{header.height} image exceeds this decoder's limit of "
            f"{DECODER_MAX_PIXELS} pixels"
        )
    if header.codec_id != CodecId.COOLCHIC:
        raise BitstreamError(f"codec id {header.codec_id} is not supported by this decoder")
    missing = [s.name for s in REQUIRED_SECTIONS if s not in sections]
    if missing:
        raise BitstreamError(f"bitstream lacks section(s): {', '.join(missing)}")
    return header, sections, unpack_config(sections[SectionId.CONFIG])


def codec_id(data: bytes | str | Path) -> CodecId:
    """The codec of a valid bitstream (checked as `read_bitstream` does)."""
    return read_bitstream(_read(data))[0].codec_id


def describe(data: bytes | str | Path) -> BitstreamInfo:
    """Header fields, section sizes and decoder complexity, without decoding."""
    raw = _read(data)
    header, sections, config = _parse(raw)
    sizes = {SectionId(k).name: len(v) for k, v in sections.items()}
    macs = mac_per_pixel(config, header.height, header.width, header.channels)
    return BitstreamInfo(header, config, sizes, len(raw), macs,
                         prior_id_of(sections[SectionId.WEIGHTS]))


def decode(data: bytes | str | Path, *, device: str = "cpu",
           checkpoint: str | Path | None = None,
           kernel: Kernel = "auto") -> np.ndarray:
    """Decode a coolchic bitstream.

    Args:
        data: the bitstream, or the path of a file holding it.
        device: where upsampling and synthesis run ('cpu' or 'cuda'); the result is
            bit-identical on both. Latent decoding always runs on the CPU.
        checkpoint: for a stream of an amortized codec (`coolchic.amortized`, decoded on
            the CPU), the weights file to use instead of the shipped one; unused otherwise.
        kernel: "native" decodes the latents and (on the CPU) synthesizes the image with
            the C++ decoder (`coolchic.decoder.native`), "numpy" with numpy and
            constriction; both give the same image bit for bit. "auto": native when it can
            be built here.

    Returns:
        (H, W, C) image, uint8 for 8-bit streams and uint16 for 16-bit ones.

    Raises:
        BitstreamError: the data is not a valid coolchic bitstream (one-sentence message;
            a subclass of ValueError).
        ValueError: an unknown `device` or `kernel`, or kernel="native" where the native
            decoder is unavailable (the message says why).
        MemoryError: the image the header describes does not fit in memory.
        OSError: `data` is a path that cannot be read.
    """
    check_device(device)
    raw = _read(data)
    header, sections = read_bitstream(raw)
    if header.codec_id != CodecId.COOLCHIC:
        from coolchic.amortized.api import decode as decode_amortized

        return decode_amortized(raw, checkpoint=checkpoint)
    header, sections, config = _parse_sections(header, sections)
    weights = unpack_weights(sections[SectionId.WEIGHTS], config, header.channels)
    shapes = grid_shapes(header.height, header.width, config.latents.n_grids)
    layout = buffer_layout(shapes, config.arm.context)
    try:
        grids = decode_latents(layout, sections[SectionId.LATENTS], IntegerArm(weights.arm), kernel=kernel)
    except EntropyError as exc:
        raise BitstreamError(f"corrupt LATENTS section: {exc}") from None
    if any(np.abs(g).max(initial=0) > LATENT_MAX for g in grids):
        raise BitstreamError("corrupt LATENTS section: latent out of range")
    return synthesize(grids, weights.mlp, weights.residual, bit_depth=header.bit_depth,
                      taps=weights.taps, device=device, kernel=kernel)
