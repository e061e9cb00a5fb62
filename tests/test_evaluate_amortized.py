"""The amortized codecs through the evaluation toolkit: their shipped weights at every shipped
quality, the real file path (bitstream written, then decoded), and bad names refused."""

import math

import numpy as np
import pytest
from PIL import Image

from coolchic.amortized import checkpoints
from coolchic.amortized.api import encode
from coolchic.evaluate.amortized_report import at_rate, comparison_markdown
from coolchic.evaluate.errors import EvaluationError
from coolchic.evaluate.evaluation import EvaluationSpec, amortized_settings, evaluate, plan
from coolchic.evaluate.published import PublishedCurve
from coolchic.evaluate.report import CurvePoint
from coolchic.evaluate.store import RunStore
from tests.conftest import synthetic_image

CODEC = "ccn"  # shipped in the package


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(2):
        Image.fromarray(synthetic_image(40, 56, seed=index)).save(folder / f"img{index}.png")
    return folder


def test_amortized_settings_are_the_shipped_qualities():
    assert amortized_settings([CODEC]) == {CODEC: tuple(float(q) for q in checkpoints.shipped(CODEC))}


def test_unknown_amortized_codec_is_refused_with_the_choices(images, tmp_path):
    with pytest.raises(EvaluationError, match="choose from: cwic, ccn, cpm"):
        plan(EvaluationSpec(images_dir=images, out=tmp_path / "run", preset=None,
                            amortized=("jpeg",)))


def test_amortized_rows_measure_the_decoded_file_and_equal_a_direct_encode(images, tmp_path):
    out = tmp_path / "run"
    spec = EvaluationSpec(images_dir=images, out=out, preset=None, amortized=(CODEC,))
    result = evaluate(spec, published=[])
    rows = RunStore(out).rows()
    qualities = checkpoints.shipped(CODEC)
    assert {(r.codec, r.image, r.quality) for r in rows} == {
        (f"amortized-{CODEC}", f"img{i}", float(q)) for i in range(2) for q in qualities}
    for row in rows:
        pixels = np.asarray(Image.open(images / f"{row.image}.png").convert("RGB"))
        direct = encode(pixels, codec=CODEC, quality=row.quality)
        stored = RunStore(out).bitstream_path(row.codec, row.image, row.setting).read_bytes()
        assert stored == direct.data
        assert row.bytes == len(direct.data)
        assert row.psnr_db == pytest.approx(direct.report.psnr_db, abs=1e-9)
        assert row.lmbda is None
    assert (out / "rd.png").stat().st_size > 0
    assert out / "summary.tsv" in result.files


def test_a_published_curve_is_read_at_our_rate_linearly_in_log_rate_and_never_extrapolated():
    bpp, psnr = (0.1, 0.4), (26.0, 30.0)
    assert at_rate(bpp, psnr, 0.2) == pytest.approx(28.0)  # ln 0.2 is halfway in ln bpp
    assert at_rate(bpp, psnr, 0.1) == pytest.approx(26.0)
    assert math.isnan(at_rate(bpp, psnr, 0.5))
    assert math.isnan(at_rate(bpp, None, 0.2))


def test_the_comparison_gives_the_gap_to_the_paper_at_our_rate():
    point = CurvePoint(setting=50.0, n_images=2, bpp=0.2, psnr_db=25.0, psnr_of_mean_mse_db=25.0,
                       ms_ssim=0.9, ms_ssim_db=10.0, encode_s=1.0, decode_s=1.0,
                       mac_per_pixel=None)
    paper = PublishedCurve(key="li2020-ccn", label="Li 2020 CCN", citation="Li et al.",
                           dataset="Kodak", group="learned", bpp=(0.1, 0.4),
                           psnr_db=(26.0, 30.0), ms_ssim=(0.9, 0.99))
    text = comparison_markdown({"amortized-ccn": [point], "jpeg420": [point]}, [paper],
                               what="test")
    row = next(line for line in text.splitlines() if line.startswith("| ccn "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["ccn", "50", "0.2000"]
    assert cells[6] == "28.00" and cells[8] == "-3.00"
    assert cells[7] == "12.60" and cells[9] == "-2.60"  # MS-SSIM halfway: 0.945 = 12.60 dB
    assert comparison_markdown({"jpeg420": [point]}, [paper], what="test") is None
