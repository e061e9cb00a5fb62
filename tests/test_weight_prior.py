"""Weight priors (format 4.0): a WEIGHTS stream may name a registered prior and code each
weight as its difference from the prior's mean; the integers decoded are the same."""

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coolchic import payload
from coolchic.bitstream import BitstreamError, SectionId, read_bitstream
from coolchic.config import ARCHS, UpsamplingConfig
from coolchic.entropy.fixedpoint import WEIGHT_MAX, QLayer
from coolchic.payload import (
    PRIOR_FRAC,
    PRIOR_ID_BITS,
    PRIORS_PATH,
    NetworkWeights,
    WeightPrior,
    best_prior,
    layer_shapes,
    pack_weights,
    predict,
    unpack_weights,
    weight_priors,
    weights_bits,
)

SPEC = (Path(__file__).parent.parent / "bitstream_spec.md").read_text()
CONFIG = ARCHS["lite-noconv"]


def _prior(rng: np.random.Generator, prior_id: int = 3, config=CONFIG) -> WeightPrior:
    means = tuple((np.round(rng.normal(0, 2.0, w) * 2**PRIOR_FRAC).astype(np.int64),
                   np.round(rng.normal(0.5, 1.0, b) * 2**PRIOR_FRAC).astype(np.int64))
                  for group in layer_shapes(config, 3).values() for w, b in group)
    return WeightPrior(prior_id, config, 3, 1e-3, means)


def _near(prior: WeightPrior, rng: np.random.Generator, spread: float) -> NetworkWeights:
    """Weights at the prior's means (at per-layer steps) plus Laplace noise of `spread`."""
    layers = []
    for i, (w_mean, b_mean) in enumerate(prior.means):
        w_frac, b_frac = 6 + i % 3, 8 + i % 2
        layers.append(QLayer(
            predict(w_mean, w_frac) + np.round(rng.laplace(0, spread, w_mean.shape)).astype(np.int64),
            predict(b_mean, b_frac) + np.round(rng.laplace(0, spread, b_mean.shape)).astype(np.int64),
            w_frac, b_frac))
    n_arm = len(CONFIG.arm.hidden) + 1
    return NetworkWeights(tuple(layers[:n_arm]), tuple(layers[n_arm:]), ())


def _same(a: NetworkWeights, b: NetworkWeights) -> bool:
    return all(np.array_equal(x.weight, y.weight) and np.array_equal(x.bias, y.bias)
               and (x.w_frac, x.b_frac) == (y.w_frac, y.b_frac)
               for x, y in zip(a.layers(), b.layers(), strict=True))


@pytest.fixture
def registered(monkeypatch):
    """A registry holding one synthetic prior for CONFIG (id 3)."""
    prior = _prior(np.random.default_rng(0))
    monkeypatch.setattr(payload, "weight_priors", lambda: {prior.id: prior})
    return prior


def test_prediction_rounds_half_up_at_any_step_and_clips():
    mean = np.array([3 << 15, -(3 << 15), (1 << 16) + 1, -1, 5 << 40], dtype=np.int64)
    # real values 1.5, -1.5, 1 + 2^-16, -2^-16, 5 * 2^24
    assert predict(mean, 0).tolist() == [2, -1, 1, 0, WEIGHT_MAX]
    assert predict(mean, 1).tolist() == [3, -3, 2, 0, WEIGHT_MAX]
    assert predict(mean, 12).tolist() == [6144, -6144, 4096, 0, WEIGHT_MAX]
    assert predict(np.array([3, -3, 1 << 12]), 18).tolist() == [12, -12, 1 << 14]
    assert predict(-mean, 0)[-1] == -WEIGHT_MAX


def test_weights_near_a_prior_are_coded_against_it_in_fewer_bytes(registered):
    rng = np.random.default_rng(1)
    weights = _near(registered, rng, spread=1.0)
    assert best_prior(weights, CONFIG, 3) == registered.id
    with_prior = pack_weights(weights, CONFIG, 3)
    without = pack_weights(weights, CONFIG, 3, prior_id=0)
    assert len(with_prior) < 0.7 * len(without)
    assert _same(unpack_weights(with_prior, CONFIG, 3), weights)
    assert _same(unpack_weights(without, CONFIG, 3), weights)
    estimate = (weights_bits(weights.layers(), registered.means) + PRIOR_ID_BITS) / 8
    assert estimate <= len(with_prior) <= estimate + 10


def test_weights_far_from_every_prior_name_none(registered):
    layers = tuple(QLayer(np.zeros_like(w), np.zeros_like(b), 8, 8) for w, b in registered.means)
    weights = NetworkWeights(layers[:2], layers[2:], ())
    assert best_prior(weights, CONFIG, 3) == 0
    data = pack_weights(weights, CONFIG, 3)
    assert _same(unpack_weights(data, CONFIG, 3), weights)


def test_extreme_weights_against_a_prior_still_round_trip(registered):
    layers = []
    for i, (w_mean, b_mean) in enumerate(registered.means):
        sign = 1 if i % 2 else -1  # the differences reach 2 * WEIGHT_MAX
        layers.append(QLayer(np.full(w_mean.shape, sign * WEIGHT_MAX, np.int64),
                             np.full(b_mean.shape, -sign * WEIGHT_MAX, np.int64), 24, 24))
    weights = NetworkWeights(tuple(layers[:2]), tuple(layers[2:]), ())
    data = pack_weights(weights, CONFIG, 3, prior_id=registered.id)
    assert _same(unpack_weights(data, CONFIG, 3), weights)


def test_a_stream_naming_an_unknown_or_mismatched_prior_is_refused(registered, monkeypatch):
    weights = _near(registered, np.random.default_rng(3), spread=2.0)
    data = pack_weights(weights, CONFIG, 3, prior_id=registered.id)
    with pytest.raises(BitstreamError, match="another decoder configuration"):
        unpack_weights(data, ARCHS["lite"], 3)
    with pytest.raises(BitstreamError, match="another decoder configuration"):
        unpack_weights(data, CONFIG, 1)
    with pytest.raises(ValueError, match="not registered"):
        pack_weights(weights, CONFIG, 3, prior_id=5)
    other = WeightPrior(5, CONFIG, 3, 1e-3, registered.means)
    monkeypatch.setattr(payload, "weight_priors", lambda: {5: other})
    forged = pack_weights(weights, CONFIG, 3, prior_id=5)  # written where 5 was registered
    monkeypatch.setattr(payload, "weight_priors", lambda: {registered.id: registered})
    with pytest.raises(BitstreamError, match="weight prior 5, which is not registered"):
        unpack_weights(forged, CONFIG, 3)


def test_registered_priors_load_and_fit_their_configurations():
    priors = weight_priors()
    for prior in priors.values():
        shapes = [s for group in layer_shapes(prior.config, prior.channels).values() for s in group]
        assert [(w.shape, b.shape) for w, b in prior.means] == shapes
        assert any(prior.matches(c, prior.channels) for c in ARCHS.values())
        assert max(int(np.abs(m).max()) for pair in prior.means for m in pair) < 1 << 40


def test_the_spec_pins_the_registered_priors_file():
    digest = hashlib.sha256(PRIORS_PATH.read_bytes()).hexdigest()
    assert re.search(rf"`coolchic/{PRIORS_PATH.name}`.*SHA-256.*`{digest}`", SPEC, re.S)
    # a prior predicts a decoder's layers, whatever its upsampling
    names = {replace(config, upsampling=UpsamplingConfig()): name for name, config in ARCHS.items()}
    for prior in weight_priors().values():
        assert re.search(rf"\| {prior.id} \| {names[prior.config]} \| {prior.channels} \|", SPEC)


def test_an_encode_with_a_registered_prior_decodes_to_its_reconstruction():
    from coolchic.decode import decode
    from coolchic.encode import encode
    from coolchic.payload import priors_for, unpack_config
    from tests.conftest import synthetic_image

    assert priors_for(CONFIG, 3), "the registry has no prior for lite-noconv"
    result = encode(synthetic_image(64, 64), lmbda=2e-2, iterations=30, arch="lite-noconv", seed=3)
    _, sections = read_bitstream(result.data)
    config = unpack_config(sections[SectionId.CONFIG])
    assert config == CONFIG
    weights = unpack_weights(sections[SectionId.WEIGHTS], config, 3)
    assert len(sections[SectionId.WEIGHTS]) <= len(pack_weights(weights, config, 3, prior_id=0))
    assert np.array_equal(decode(result.data), result.reconstruction)
