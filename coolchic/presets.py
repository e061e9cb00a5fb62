"""Training recipes as data. A preset is a list of phases; the training loop consumes one
phase at a time (``coolchic.train``). Iteration counts and the time each preset takes on a
Kodak image (768x512) on the reference 2-core CPU are documented in the README."""

from __future__ import annotations

from dataclasses import dataclass, replace

from coolchic.quant import QuantizerKind

NOISE_KINDS: tuple[str, ...] = ("kumaraswamy", "gaussian")
OPTIMIZERS: tuple[str, ...] = ("adam", "soap")


def stable_repr(value: object) -> str:
    """repr(value) with the Phase and Preset fields added after coolchic 0.5 left out where they hold
    their default, so that what identifies a recipe (a run's fingerprint, an encode's saved
    state) stays as it was for recipes that do not use them."""
    return (repr(value).replace(", synthesis_gain=1.0)", ")").replace(", optimizer='adam')", ")")
            .replace(", noise='kumaraswamy')", ")"))


@dataclass(frozen=True)
class Phase:
    iterations: int  # optimizer steps in this phase
    lr: float  # peak Adam learning rate
    quantizer: QuantizerKind  # latent quantization proxy
    schedule: str = "cosine"  # learning-rate schedule over the phase: "cosine" or "constant"
    eval_every: int = 100  # iterations between evaluations of the true (rounded) RD cost
    latent_lr: float | None = None  # peak learning rate of the latents (None: lr)
    temperature: tuple[float, float] = (0.3, 0.1)  # softround temperature, start -> end (linear)
    noise_shape: tuple[float, float] = (2.0, 1.0)  # softround noise parameter, start -> end: the
    # Kumaraswamy shape a (>= 1) or the Gaussian standard deviation (> 0), as `noise` says
    noise: str = "kumaraswamy"  # softround's noise: "kumaraswamy" (C3) or "gaussian"
    optimizer: str = "adam"  # "adam", or "soap" (coolchic.soap: the networks' matrices preconditioned)

    def __post_init__(self) -> None:
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"unknown softround noise {self.noise!r}; choose one of: "
                             f"{', '.join(NOISE_KINDS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class Warmup:
    """Train `candidates` random initializations for `iterations` each with the first
    phase's settings (constant learning rate), keep the one of lowest true RD cost, then
    run the phases from it (the warm-up of Cool-chic 3, Leguay et al., 2024)."""

    candidates: int  # random initializations tried (1: no warm-up)
    iterations: int  # optimizer steps given to each candidate


@dataclass(frozen=True)
class Preset:
    name: str
    phases: tuple[Phase, ...]
    description: str
    warmup: Warmup = Warmup(1, 0)
    refine_trials: int = 0  # greedy integer-weight refinement: trials per module group
    synthesis_gain: float = 1.0  # factor on the first synthesis layer's initial weights

    @property
    def warmup_iterations(self) -> int:
        return self.warmup.candidates * self.warmup.iterations if self.warmup.candidates > 1 else 0

    @property
    def iterations(self) -> int:
        """All optimizer steps, the warm-up's included."""
        return self.warmup_iterations + sum(p.iterations for p in self.phases)

    def scaled_to(self, iterations: int) -> Preset:
        """The same recipe with the phases' lengths scaled to `iterations` in total
        (phases that round to zero iterations are dropped)."""
        if iterations < 1:
            raise ValueError("iterations must be >= 1")
        warmup = replace(self.warmup, iterations=self.warmup.iterations * iterations // self.iterations)
        if warmup.iterations < 1:
            warmup = Warmup(1, 0)
        budget = iterations - (warmup.candidates * warmup.iterations if warmup.candidates > 1 else 0)
        main = sum(p.iterations for p in self.phases)
        counts = [p.iterations * budget // main for p in self.phases[:-1]]
        counts.append(budget - sum(counts))
        phases = tuple(
            replace(p, iterations=n, eval_every=min(p.eval_every, n))
            for p, n in zip(self.phases, counts)
            if n > 0
        )
        return replace(self, phases=phases, warmup=warmup)


# Measured on 256x256 centre crops of kodim01/07/23 at lambda 1e-4 and 4e-3, 750 iterations,
# as the geometric mean of the true RD cost D + lambda R relative to the first recipe
# (uniform noise, one learning rate 1e-2): soft-rounding + Kumaraswamy noise 0.51 (same lr);
# latents at lr 1e-1 0.41, 2e-1 0.38, 4e-1 0.34, 8e-1 0.38 (networks at 1e-2 or 2e-2);
# soft-rounding rather than uniform noise at lr 1e-1: 0.41 vs 0.44; temperature from 0.5
# rather than 0.3: 0.38 vs 0.41, from 1.0: same as 0.5; uniform instead of annealed
# Kumaraswamy noise: same within noise; a warm-up of 4 x 40 iterations taken from the
# budget: 0.35 vs 0.34 (no gain at this budget, so presets do not use one).
# Greedy refinement of the integer weights (coolchic.quant), first measured on crops of
# kodim01 and kodim23 after 600 iterations at lambda 1e-4 and 4e-3: 50 trials per group
# lowered the true cost by 0.2-1.0%, 200 trials by 0.3-1.3%, for 2-16 s per 256x256 crop.
# After the full 3000 iterations of the quick preset it pays more than more iterations do
# (4500 instead of 3000 iterations: -1.3% to -3.0% for +50% time): on a crop of kodim07 at
# lambda 4e-3 (default arch) and of kodim01 at 2e-2 (lite), per-layer steps gave -0.7% and
# -0.5%, and 30 / 60 / 100 trials after them -1.0 / -1.4 / -1.6% and -1.0 / -1.0 / -1.1%
# in all, for 1.5-5 s. Hence 60 trials in the quick and fast presets. The gain on the
# whole quick protocol: results/kodak-quick-quant/.
# quick has 4500 iterations since the native kernels made them fit the protocol's hour:
# against 3000, the RD cost fell on 91 of 96 crop-lambda pairs (means -3.2 % at 1e-4 to
# -1.4 % at 2e-2) and the curve's BD-rate against x265 HEVC 4:4:4 went from +9.45 % to
# +5.03 %; the whole protocol took 58 min on the AMD EPYC VM (results/kodak-quick-4500/).
# quick has 7000 iterations (6300 + 700, the 4500 recipe scaled) since the Intel Xeon VM ran
# the whole protocol with them in 38 min 41 s: against 4500 (format 4.0 files), the RD cost
# fell on 95 of 96 pairs (means -2.5 % at 1e-4 to -1.3 % at 2e-2) and the BD-rate against
# x265 HEVC 4:4:4 went from +3.34 % to -0.28 % (results/kodak-quick-7000/). On the slower
# AMD EPYC VM that protocol would take about 90 minutes (not run there).
# At 7000 iterations, six one-change variants of the quick recipe were measured on 8 crops
# at lambda 4e-3 and 2e-2 (results/kodak-quick-recipe/): latent lr 0.2, network lr 0.01,
# final temperature 0.05, 1400 straight-through iterations, straight-through lr 1e-3, a
# warm-up of 4 x 150 iterations. None lowered the mean J by more than 0.5 % (the spread of
# the same encode on two machines); network lr 0.01 and temperature 0.05 cost 1-2 %.
def _recipe(name: str, n_main: int, n_ste: int, description: str, refine: int = 0) -> Preset:
    return Preset(
        name,
        (Phase(n_main, 2e-2, "softround", latent_lr=4e-1, temperature=(0.5, 0.1), noise_shape=(2.0, 1.0)),
         Phase(n_ste, 1e-4, "ste", eval_every=50)),
        description,
        refine_trials=refine,
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _recipe("fast", 2500, 300, "a few minutes for a Kodak image on 2 CPU cores", refine=60),
        _recipe("medium", 6300, 700, "2.5x fast; the crop protocol of make reproduce-paper", refine=60),
        _recipe("slow", 20000, 2000, "paper-grade; 8x fast, meant for a GPU", refine=200),
    )
}  # in order of cost
DEFAULT_PRESET = "fast"
# coolchic 0.4's `quick` (7000 iterations) cost more than `fast` and about as much as its
# `medium` (6600, 100 refinement trials); 0.5 keeps the former as `medium`
RENAMED = {"quick": "medium"}


def get_preset(name: str) -> Preset:
    """The preset called `name` (raises ValueError naming the presets, and the new name of
    a renamed one)."""
    if name not in PRESETS:
        hint = f" (renamed {RENAMED[name]!r} in coolchic 0.5)" if name in RENAMED else ""
        raise ValueError(f"unknown preset {name!r}{hint}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
