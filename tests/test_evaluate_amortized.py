"""The amortized codecs through the evaluation toolkit: their shipped weights at every shipped
quality, the real file path (bitstream written, then decoded), and bad names refused."""

import numpy as np
import pytest
from PIL import Image

from coolchic.amortized import checkpoints
from coolchic.amortized.api import encode
from coolchic.evaluate.errors import EvaluationError
from coolchic.evaluate.evaluation import EvaluationSpec, amortized_settings, evaluate, plan
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
