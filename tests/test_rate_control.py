"""Quality scale and the lambda search for a target bpp or PSNR."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from coolchic.cli import app
from coolchic.rate_control import lmbda_from_quality, search_lmbda


def _fake_codec(calls):
    """An encoder whose bpp is 0.05 * lambda^-0.45 and PSNR 18 - 1.3 ln(lambda)."""

    def encode_at(lmbda):
        calls.append(lmbda)
        bpp = 0.05 * lmbda ** -0.45
        return SimpleNamespace(report=SimpleNamespace(bpp=bpp, psnr_db=18 - 1.3 * math.log(lmbda),
                                                      lmbda=lmbda))
    return encode_at


def test_quality_maps_monotonically_onto_the_documented_lambda_range():
    assert lmbda_from_quality(0) == pytest.approx(5e-2)
    assert lmbda_from_quality(100) == pytest.approx(2e-5)
    values = [lmbda_from_quality(q) for q in range(0, 101, 5)]
    assert all(a > b for a, b in zip(values, values[1:]))
    for bad in (-1, 101, float("nan")):
        with pytest.raises(ValueError, match="quality"):
            lmbda_from_quality(bad)


@pytest.mark.parametrize("target", [0.3, 0.8, 2.0])
def test_bpp_search_lands_just_under_the_target_within_the_encode_budget(target):
    calls = []
    result, trials = search_lmbda(_fake_codec(calls), kind="bpp", target=target, max_encodes=5)
    assert len(trials) == len(calls) <= 5
    assert result.report.bpp <= target
    assert result.report.bpp >= 0.97 * target * 0.97  # close: within the tolerance, one step of slack
    assert trials[-1].lmbda == pytest.approx(calls[-1])


def test_psnr_search_reaches_at_least_the_target():
    calls = []
    result, _ = search_lmbda(_fake_codec(calls), kind="psnr", target=33.0, max_encodes=5)
    assert 33.0 <= result.report.psnr_db <= 33.3


def test_search_returns_the_closest_encode_when_the_budget_is_too_small():
    calls = []
    result, trials = search_lmbda(_fake_codec(calls), kind="bpp", target=5.0, max_encodes=1)
    assert len(trials) == 1 and result.report.lmbda == calls[0]


def test_search_refuses_bad_targets():
    with pytest.raises(ValueError, match="target"):
        search_lmbda(_fake_codec([]), kind="bpp", target=-1)
    with pytest.raises(ValueError, match="choose"):
        search_lmbda(_fake_codec([]), kind="ssim", target=0.9)  # type: ignore[arg-type]


def test_cli_takes_one_quality_knob_and_refuses_two(tmp_path):
    import numpy as np
    from PIL import Image

    from tests.conftest import synthetic_image

    Image.fromarray(synthetic_image(16, 16)).save(tmp_path / "a.png")
    runner = CliRunner()
    ok = runner.invoke(app, ["encode", str(tmp_path / "a.png"), "--quality", "60", "-o",
                             str(tmp_path / "q.bin"), "--iterations", "3"])
    assert ok.exit_code == 0, ok.output
    assert f"{lmbda_from_quality(60):.3g}" in ok.stdout
    search = runner.invoke(app, ["encode", str(tmp_path / "a.png"), "--target-bpp", "6", "-o",
                                 str(tmp_path / "t.bin"), "--iterations", "3", "--max-encodes", "2"])
    assert search.exit_code == 0, search.output
    assert search.output.count("lambda") >= 2  # the trials, then the summary
    for args in (["--quality", "50", "--lmbda", "0.01"], ["--target-bpp", "1", "--target-psnr", "30"],
                 ["--quality", "150"], ["--target-bpp", "0"]):
        bad = runner.invoke(app, ["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "bad.bin"),
                                  "--iterations", "3", *args])
        assert bad.exit_code == 2, bad.output
        assert "Traceback" not in bad.output and not (tmp_path / "bad.bin").exists()
    assert np.asarray(Image.open(tmp_path / "a.png")).shape == (16, 16, 3)
