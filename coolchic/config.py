"""Decoder configuration: frozen dataclasses and the registry of named architectures.

The configuration is everything the decoder needs to rebuild the network shapes; it is
written into the bitstream's CONFIG section (see ``bitstream_spec.md``). Derived shapes are
pure functions of the configuration and the image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Causal neighbours of a latent in its own grid, as (row offset, column offset), nearest
# first. An ARM with context N uses the first N. Every offset is strictly before (0, 0) in
# raster order, so decoding in raster (or wavefront) order always has them available.
CONTEXT_OFFSETS: tuple[tuple[int, int], ...] = (
    (0, -1), (-1, 0), (-1, -1), (-1, 1),
    (0, -2), (-2, 0), (-1, -2), (-1, 2),
    (-2, -1), (-2, 1), (-2, -2), (-2, 2),
)
MAX_CONTEXT = len(CONTEXT_OFFSETS)
CONTEXT_ROWS = 2  # rows above the current one that a context can reach
CONTEXT_COLS = 2  # columns left/right that a context can reach


@dataclass(frozen=True)
class LatentConfig:
    n_grids: int = 7  # grids at 1, 1/2, ..., 1/2^(n_grids-1) of the image resolution


@dataclass(frozen=True)
class ArmConfig:
    context: int = 12  # number of causal neighbours fed to the ARM (first N of CONTEXT_OFFSETS)
    hidden: tuple[int, ...] = (12, 12)  # widths of the hidden layers (ReLU)


@dataclass(frozen=True)
class SynthesisConfig:
    hidden: tuple[int, ...] = (14,)  # widths of the per-pixel (1x1) hidden layers (ReLU)
    residual_convs: int = 1  # 3x3 residual convolutions (C -> C) applied after the MLP


@dataclass(frozen=True)
class UpsamplingConfig:
    learned: bool = False  # each level's 4 taps trained and sent (else the fixed bicubic ones)


@dataclass(frozen=True)
class DecoderConfig:
    latents: LatentConfig = field(default_factory=LatentConfig)
    arm: ArmConfig = field(default_factory=ArmConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    upsampling: UpsamplingConfig = field(default_factory=UpsamplingConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.latents.n_grids <= 12:
            raise ValueError(f"n_grids must be in 1..12, got {self.latents.n_grids}")
        if not 1 <= self.arm.context <= MAX_CONTEXT:
            raise ValueError(f"ARM context must be in 1..{MAX_CONTEXT}, got {self.arm.context}")
        for width in (*self.arm.hidden, *self.synthesis.hidden):
            if not 1 <= width <= 64:
                raise ValueError(f"layer widths must be in 1..64, got {width}")
        if len(self.arm.hidden) > 4 or len(self.synthesis.hidden) > 4:
            raise ValueError("at most 4 hidden layers in the ARM and in the synthesis")
        if not 0 <= self.synthesis.residual_convs <= 4:
            raise ValueError("residual_convs must be in 0..4")


# Named decoder configurations. The MAC/pixel of each is computed by coolchic.complexity
# and checked in tests; `default` must stay under 700 MAC/pixel.
ARCHS: dict[str, DecoderConfig] = {
    # Learned upsampling taps (format 5.0) cost no multiply and lowered the true RD cost J on
    # all 8 whole-image pairs of the screening protocol (4 Kodak images x lambda 1e-3, 1e-2,
    # preset fast): by 1.0 % on average, 0.15 % to 3.0 % (results/screening/).
    "default": DecoderConfig(upsampling=UpsamplingConfig(learned=True)),
    "mid": DecoderConfig(arm=ArmConfig(context=12, hidden=(12,))),
    "lite": DecoderConfig(
        arm=ArmConfig(context=8, hidden=(8,)),
        synthesis=SynthesisConfig(hidden=(12,), residual_convs=1),
    ),
    "lite-noconv": DecoderConfig(
        arm=ArmConfig(context=8, hidden=(8,)),
        synthesis=SynthesisConfig(hidden=(12,), residual_convs=0),
    ),
    # 639 MAC/pixel spent the other way round: a smaller ARM (192) and a wider synthesis
    # (402), learned taps. At low rates the synthesis, not the entropy model, limits the
    # quality, and `auto` picks synth there (SYNTH_FROM); at high rates default wins.
    "synth": DecoderConfig(
        arm=ArmConfig(context=8, hidden=(8, 8)),
        synthesis=SynthesisConfig(hidden=(24,), residual_convs=2),
        upsampling=UpsamplingConfig(learned=True),
    ),
    # The shape of Cool-chic's LOP decoder (about 580 MAC/pixel, Cool-chic 3.4 to 4.2): ARM
    # of 8 neighbours and two hidden layers of 8, synthesis 16 -> 3 then two 3x3 residual
    # convolutions, learned upsampling taps. (Theirs has a ReLU between its convolutions and
    # 8-tap plus 7-tap pre-concatenation filters; ours are linear and 4-tap symmetric.)
    "lop": DecoderConfig(
        arm=ArmConfig(context=8, hidden=(8, 8)),
        synthesis=SynthesisConfig(hidden=(16,), residual_convs=2),
        upsampling=UpsamplingConfig(learned=True),
    ),
}
DEFAULT_ARCH = "default"
AUTO_ARCH = "auto"  # the encoder's default: `auto_arch` picks one of ARCHS per image
BEST_ARCH = "best"  # encode with each of `best_candidates` and keep the lowest RD cost
RACE_ARCH = "race"  # train each of `race_candidates` briefly, encode with the best
# When the decoder's weights are a large part of the file, a smaller decoder wins. Measured
# on 256x256 centre crops of 8 Kodak images (kodim01, 04, ..., 22; preset quick, 3000
# iterations): at lambda 2e-2, lite spent 19% fewer bits than default at equal mean PSNR
# (0.115 against 0.143 bpp; true RD cost -6.8%; its weights take about 250 bytes of a
# 1.1 KB file, default's about 400); at 4e-3 default was better (lite +2.9% RD cost). A
# still smaller decoder (ARM 8 -> 6 -> 2, synthesis 7 -> 8 -> 3) lost to lite at 2e-2
# (0.137 bpp). mid (default without the ARM's second hidden layer, 156 fewer weights) at
# 4e-3 on all 24 crops of the quick protocol: 0.3679 bpp / 29.30 dB against default's
# 0.3701 / 29.54, i.e. the curve's BD-rate against HEVC 4:4:4 from +10.70% to +12.76%
# (experiments/kodak-quick-quant/run.py --arch mid --lambdas 4e-3); so auto never picks mid.
# lite-noconv (lite without its residual convolution: 84 fewer weights, 272 MAC/pixel)
# beat lite on the 24 crops of the quick protocol (means), in rate and PSNR: at 2e-2 0.1275 bpp /
# 25.60 dB against 0.1297 / 25.48 (RD cost -2.6%, better on 21 crops of 24; the curve's
# BD-rate against HEVC 4:4:4 from +10.64% to +10.13%), at 1e-2 0.2113 / 27.12 against
# 0.2172 / 27.06 (-1.7%, 14 of 24); so auto picks it where it picked lite. At 4e-3
# default still wins: lite-noconv 0.3819 / 29.31 against 0.3701 / 29.54 (RD cost +3.2%,
# worse on 19 of 24).
# The weights cost the same bits whatever the image size while what a
# larger decoder saves grows with the pixel count, so the switch point scales with it.
SMALL_FROM = 1e-2  # lambda * 65536 / pixels from which `auto_arch` picks SMALL_ARCH
SMALL_ARCH = "lite-noconv"
# Below SMALL_FROM, the rate itself decides between the two ways of spending about 650
# multiplies: at low rates (a few hundredths of a bit per pixel) the synthesis limits the
# quality, at high rates the entropy model does. On whole Kodak images with the paper-grade
# preset, synth's J / default's J at lambda 2e-2 was 0.880 (kodim04, both with learned
# taps; results/screening/, round 4) and 0.907 to 0.941 on kodim01, 07, 15, 23 (both
# bicubic; results/kodak-quick-recipe/); at 4e-3 0.94 to 1.05 (2 of 4), at 5e-4 1.03 to
# 1.16 (0 of 4). With preset fast on 20 other whole images: 0.978 at 2e-2 (14 of 20),
# 1.002 at 8e-3 (9 of 20; results/kodak-full-fast-synth/). The switch is on lambda, not on
# lambda per pixel: on 256x256 crops at 4e-3 (a mid rate there too) synth lost, 1.017
# (2 of 8; results/kodak-quick-recipe/). With learned taps at paper grade at 4e-3 (results/
# screening/, rounds 4-5): 0.934 (kodim04), 0.928 (kodim07), 1.027 (kodim01), so still 2 of 4.
SYNTH_FROM = 1e-2  # lambda from which `auto_arch` picks SYNTH_ARCH (below SMALL_FROM's load)
SYNTH_ARCH = "synth"


def get_arch(name: str) -> DecoderConfig:
    """Return the named decoder configuration, or raise ValueError listing the names."""
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; choose one of: {', '.join(ARCHS)}")
    return ARCHS[name]


def check_arch_name(name: str) -> str:
    """A name the encoder accepts: one of ARCHS, "auto", "best" or "race"; ValueError
    listing them otherwise."""
    if name not in (AUTO_ARCH, BEST_ARCH, RACE_ARCH) and name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; choose one of: {AUTO_ARCH}, {BEST_ARCH}, "
                         f"{RACE_ARCH}, {', '.join(ARCHS)}")
    return name


def auto_arch(lmbda: float, height: int, width: int) -> str:
    """The decoder configuration `auto` picks for an image of this size at this lambda:
    SMALL_ARCH where its fewer weight bits pay (lambda * 65536 / pixels >= SMALL_FROM),
    else SYNTH_ARCH at low rates (lambda >= SYNTH_FROM), else default."""
    if lmbda * (1 << 16) / (height * width) >= SMALL_FROM:
        return SMALL_ARCH
    return SYNTH_ARCH if lmbda >= SYNTH_FROM else DEFAULT_ARCH


# Where auto picks default or synth, `best` also tries the other: per image and lambda, the decoder of
# lower true RD cost (the per-image choice among decoders of C3, Kim et al., CVPR 2024). It
# doubles the encode time. Measured (results/kodak-quick-recipe/): on 256x256 crops an
# oracle choice among four decoders under 700 MAC/pixel lowers J by 0 % at lambda 5e-4 and
# 1.1 % at 4e-3; on whole images with the paper-grade preset synth's J is 0.918 of
# default's on kodim07 and 1.116 on kodim23 at 4e-3 (CUDA). On the 4 paper-grade images
# at 3 lambdas (CPU) synth won at 2e-2 on all 4, at 4e-3 on 2, at 5e-4 on none; best's
# mean curve is -7.46 % against x265 HEVC 4:4:4, default's -3.61 %.
# On the other 20 whole Kodak images with preset fast (results/kodak-full-fast-synth/): synth's
# J / default's J has geometric mean 0.978 at 2e-2 (better on 14 of 20, but 1.31 on kodim02)
# and 1.002 at 8e-3 (9 of 20), so auto keeps default there; best lowers J by 4.2 % and 1.0 %.
BEST_ALSO = {DEFAULT_ARCH: "synth", SYNTH_ARCH: DEFAULT_ARCH}


def best_candidates(lmbda: float, height: int, width: int) -> tuple[str, ...]:
    """The decoders `best` encodes with: auto's pick, and its BEST_ALSO rival (none for
    SMALL_ARCH)."""
    first = auto_arch(lmbda, height, width)
    return (first, BEST_ALSO[first]) if first in BEST_ALSO else (first,)


# `race` (the per-image choice of Cool-chic's MIX at a fraction of `best`'s cost): where auto
# picks default, default and lop are each trained for RACE_FRACTION of the preset's
# iterations and the one of lower true RD cost is then encoded in full (1 + 2 x RACE_FRACTION
# the time of one encode). On whole images at preset fast neither wins everywhere: lop's
# J / default's J ran from 0.95 to 1.06 (results/screening/, round 1). The race lowered J by
# 0.64 % on the 8 screening pairs (-4.6 % on kodim23 at 1e-2, where it picked lop), 0.5 %
# short of always picking the better one; for 1.2 times the iterations, which is about
# what 20 % more iterations would give, so auto does not race.
# Where auto picks synth (low rates), the race is against default.
RACE_ALSO = {DEFAULT_ARCH: "lop", SYNTH_ARCH: DEFAULT_ARCH}
RACE_FRACTION = 0.1


def race_candidates(lmbda: float, height: int, width: int) -> tuple[str, ...]:
    """The decoders `race` tries: auto's pick, and its RACE_ALSO rival (none for SMALL_ARCH)."""
    first = auto_arch(lmbda, height, width)
    return (first, RACE_ALSO[first]) if first in RACE_ALSO else (first,)


def grid_shapes(height: int, width: int, n_grids: int) -> list[tuple[int, int]]:
    """Shapes (rows, cols) of the latent grids, finest first: ceil(H / 2^k) x ceil(W / 2^k)."""
    return [(-(-height // (1 << k)), -(-width // (1 << k))) for k in range(n_grids)]


def context_offsets(context: int) -> tuple[tuple[int, int], ...]:
    """The (dr, dc) offsets of an ARM with `context` neighbours."""
    return CONTEXT_OFFSETS[:context]


def wavefront_slope(context: int) -> int:
    """Smallest integer a such that t = a*row + col orders every context before its latent.

    A neighbour (dr, dc) with dr < 0 comes first iff a*dr + dc < 0, i.e. a > dc / -dr.
    """
    slope = 1
    for dr, dc in context_offsets(context):
        if dr < 0:
            slope = max(slope, dc // (-dr) + 1)
    return slope
