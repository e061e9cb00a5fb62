"""Streams of the first amortized payload layout (u32 word counts, no payload_version) still
decode, to the same image as their current-layout rewrite.

The golden files in golden/amortized-layout1 were written by coolchic at commit 61b40ef (the
last with the first layout): tiny random-init cwic (with its importance map), ccn and cpm
weights (``<codec>.pt``, quality 7) and their streams of ``image.png``. Regenerate with
COOLCHIC_REGEN_GOLDEN=1 pytest tests/test_amortized_legacy.py, which writes the streams with
`legacy.downgrade` (the first layout's writer) instead: only needed if the weights change.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized import checkpoints, legacy
from coolchic.amortized.api import decode, describe
from coolchic.amortized.codec import read_stream
from coolchic.bitstream import BitstreamError, SectionId, read_bitstream
from coolchic.cli import app
from tests.conftest import synthetic_image

GOLDEN = Path(__file__).parent / "golden" / "amortized-layout1"
REGEN = os.environ.get("COOLCHIC_REGEN_GOLDEN") == "1"
CODECS = ("cwic", "ccn", "cpm")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(name: str):
    return checkpoints.load(GOLDEN / f"{name}.pt", name=name)


def _image() -> np.ndarray:
    return np.asarray(Image.open(GOLDEN / "image.png"))


@pytest.mark.parametrize("name", CODECS)
def test_a_stream_written_before_payload_version_2_decodes_to_its_encoders_image(name):
    model = _model(name)
    if REGEN:
        (GOLDEN / f"{name}.bin").write_bytes(legacy.downgrade(model.compress(_image())))
    old = (GOLDEN / f"{name}.bin").read_bytes()
    stream = read_stream(old)
    assert stream.legacy and stream.quality == 7
    assert np.array_equal(model.decompress(old), model.reconstruct(_image()))
    assert np.array_equal(decode(old, checkpoint=GOLDEN / f"{name}.pt"), model.reconstruct(_image()))
    assert describe(old).legacy


@pytest.mark.parametrize("name", CODECS)
def test_the_legacy_writer_gives_the_old_files_byte_for_byte_and_upgrade_inverts_it(name):
    model = _model(name)
    new = model.compress(_image())
    old = (GOLDEN / f"{name}.bin").read_bytes()
    assert legacy.downgrade(new) == old
    assert legacy.upgrade(old) == new
    assert len(new) < len(old)  # varint word counts: 3 bytes less per symbol stream
    assert not read_stream(new).legacy


@pytest.mark.parametrize("name", CODECS)
def test_a_legacy_writer_stream_of_a_new_encode_decodes_like_the_new_one(name):
    torch.manual_seed(3)
    model = _model(name)
    image = synthetic_image(17, 30, seed=9)
    new = model.compress(image)
    old = legacy.downgrade(new)
    _, sections = read_bitstream(old)
    assert len(sections[SectionId.CONFIG]) == 5 + legacy.LEGACY_FIELDS[name]
    assert np.array_equal(model.decompress(old), model.decompress(new))


def test_a_damaged_legacy_stream_gives_a_bitstream_error_and_new_streams_are_not_upgraded():
    old = (GOLDEN / "cwic.bin").read_bytes()
    model = _model("cwic")
    for cut in (1, 4, 9):
        with pytest.raises(BitstreamError):
            model.decompress(old[:-cut])
    header, sections = read_bitstream(old)
    from coolchic.bitstream import write_bitstream

    latents = sections[SectionId.LATENTS]
    for bad in (latents[:-4], latents[:3], b"\xff\xff\xff\xff" + latents[4:]):
        damaged = write_bitstream(header, [(SectionId.CONFIG, sections[SectionId.CONFIG]),
                                           (SectionId.LATENTS, bad)])
        with pytest.raises(BitstreamError, match="invalid bitstream|corrupt"):
            model.decompress(damaged)
    with pytest.raises(BitstreamError, match="not a cwic stream of the first amortized layout"):
        legacy.upgrade(model.compress(_image()))


def test_info_says_an_old_stream_is_read_upgraded():
    result = CliRunner().invoke(app, ["info", str(GOLDEN / "ccn.bin")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "first amortized layout" in result.stdout and "quality 7" in result.stdout
