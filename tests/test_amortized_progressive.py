"""System (d): the progressive entropy coder for layered binary codes, on synthetic codes."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from coolchic.amortized import registry
from coolchic.amortized.progressive import (
    ProgressiveConfig,
    SyntheticCodes,
    build_model,
    compress,
    decompress,
    integer_net,
    synthetic_report,
)
from coolchic.bitstream import CodecId
from coolchic.cli import app
from coolchic.entropy.coder import EntropyError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _untrained(config: ProgressiveConfig):
    torch.manual_seed(0)
    return integer_net(build_model(config))


def test_real_coded_size_on_the_synthetic_source_is_within_5_percent_of_its_entropy():
    config = ProgressiveConfig(layer_depth=4, layer_count=3)
    r = synthetic_report(config, height=32, width=32, train_samples=8, steps=200)
    assert r.round_trip
    assert r.coded_bits == 12 * 32 * 32
    assert r.ideal_bits_per_bit <= r.bits_per_bit <= r.ideal_bits_per_bit + 200 / r.coded_bits
    assert r.bits_per_bit < 1.05 * r.bound_bits_per_bit
    assert 0.5 < r.bound_bits_per_bit < 0.9  # a source neither trivial nor incompressible


def test_only_the_coded_layers_are_coded_and_decoded():
    full = ProgressiveConfig(layer_depth=3, layer_count=3)
    part = ProgressiveConfig(layer_depth=3, layer_count=3, coded_layer_count=2)
    codes = SyntheticCodes(3, 3, seed=1).sample(8, 10, seed=2).codes
    net = _untrained(full)  # the same weights serve both: layers never read later layers
    data_full, data_part = compress(net, full, codes), compress(net, part, codes)
    assert len(data_part) < len(data_full)
    out = decompress(net, part, data_part)
    assert np.array_equal(out[:6], codes[:6]) and not out[6:].any()
    assert np.array_equal(decompress(net, full, data_full), codes)


def test_streams_of_another_configuration_or_truncated_are_refused():
    config = ProgressiveConfig(layer_depth=2, layer_count=2)
    net = _untrained(config)
    data = compress(net, config, SyntheticCodes(2, 2).sample(5, 6, seed=0).codes)
    other = ProgressiveConfig(layer_depth=2, layer_count=2, coded_layer_count=1)
    with pytest.raises(EntropyError, match="this coder has 2x2 \\(coded 1\\)"):
        decompress(net, other, data)
    with pytest.raises(EntropyError):
        decompress(net, config, data[:3])
    with pytest.raises(EntropyError):
        decompress(net, config, data[:-4])
    with pytest.raises(ValueError, match="bits"):
        compress(net, config, np.full((4, 2, 2), 2, np.uint8))


def test_the_sources_entropy_is_the_mean_information_of_its_samples():
    source = SyntheticCodes(4, 2, seed=3)
    samples = [source.sample(16, 16, seed=s) for s in range(6)]
    entropy = sum(s.entropy_bits for s in samples)
    information = sum(s.information_bits for s in samples)
    assert abs(information - entropy) < 0.03 * entropy
    assert samples[0].codes.shape == (8, 16, 16) and samples[0].codes.dtype == np.uint8


def test_the_progressive_coder_is_registered_with_the_progressive_codec_id():
    entry = registry.get("progressive")
    assert entry.codec_id == CodecId.PROGRESSIVE
    assert entry.load().__name__ == "coolchic.amortized.progressive"


def test_the_cli_reports_bits_per_bit_against_the_bound():
    result = CliRunner().invoke(app, ["amortized", "progressive", "--layer-depth", "2",
                                      "--layer-count", "2", "--height", "8", "--width", "8",
                                      "--train-samples", "2", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "real / bound" in result.output and "exact" in result.output
    bad = CliRunner().invoke(app, ["amortized", "progressive", "--coded-layer-count", "9"])
    assert bad.exit_code == 2 and "coded_layer_count must lie in 1..layer_count=4" in bad.output
