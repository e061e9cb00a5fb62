"""Golden files and the normative payload constants: a committed tiny bitstream must keep
decoding to the committed image, and bitstream_spec.md's payload numbers must match the code.

Regenerate with COOLCHIC_REGEN_GOLDEN=1 pytest tests/test_golden.py (only when the format
changes on purpose: that also needs a format version bump)."""

import hashlib
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coolchic.bitstream import BitstreamError
from coolchic.config import CONTEXT_OFFSETS
from coolchic.decode import decode
from coolchic.decoder.constants import SYN_FRAC
from coolchic.entropy.fixedpoint import ACT_MAX, ARM_FRAC, LATENT_MAX, WEIGHT_MAX
from coolchic.entropy.tables import table_sha256
from tests.conftest import synthetic_image

GOLDEN = Path(__file__).parent / "golden"
SPEC = (Path(__file__).parent.parent / "bitstream_spec.md").read_text()
REGEN = os.environ.get("COOLCHIC_REGEN_GOLDEN") == "1"


def _digest(image: np.ndarray) -> str:
    return f"{image.shape} {image.dtype} " + hashlib.sha256(image.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def golden_bitstream() -> bytes:
    if REGEN:
        from coolchic.encode import encode

        result = encode(synthetic_image(9, 13), lmbda=2e-3, iterations=40, seed=7)
        (GOLDEN / "tiny.bin").write_bytes(result.data)
        (GOLDEN / "tiny.decoded.sha256").write_text(_digest(result.reconstruction) + "\n")
    return (GOLDEN / "tiny.bin").read_bytes()


def test_golden_bitstream_decodes_to_the_committed_image(golden_bitstream):
    expected = (GOLDEN / "tiny.decoded.sha256").read_text().strip()
    assert _digest(decode(golden_bitstream)) == expected


def test_spec_payload_constants_match_the_code():
    assert table_sha256() in SPEC
    assert f"fractional bits {SYN_FRAC}" in SPEC and f"2^{SYN_FRAC - 1}) / 2^{SYN_FRAC}" in SPEC
    assert f"f becomes {ARM_FRAC}" in SPEC
    assert f"clip(floor(acc · 2^(16 − A)), −2^{ACT_MAX.bit_length() - 1}" in SPEC
    assert f"WEIGHT_MAX = 2^{WEIGHT_MAX.bit_length() - 1}" in SPEC
    assert f"[−{LATENT_MAX}, {LATENT_MAX}]" in SPEC
    listed = re.search(r"arm_context = N uses the first N:\n(.*)\n", SPEC).group(1)
    offsets = [tuple(int(v.replace("−", "-")) for v in pair.split(","))
               for pair in re.findall(r"\(([^)]*)\)", listed)]
    assert tuple(offsets) == CONTEXT_OFFSETS


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


@settings(max_examples=60, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bitstreams_give_a_clean_error_or_a_valid_image(golden_bitstream, data):
    """Flips, truncations and insertions, with the checksum recomputed half of the time so
    that the mutation reaches the payload parsers and the entropy decoder."""
    stream = bytearray(golden_bitstream[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = data.draw(st.integers(0, max(0, len(stream) - 1)))
        if kind == "flip" and stream:
            stream[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and stream:
            stream[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del stream[pos : pos + data.draw(st.integers(1, 16))]
        else:
            stream[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    mutated = _with_crc(bytes(stream)) if data.draw(st.booleans()) else bytes(stream) + golden_bitstream[-4:]
    try:
        image = decode(mutated)
    except BitstreamError:
        return
    except ValueError as exc:  # a codec id turned amortized: its stream names weights
        assert "no shipped" in str(exc)  # that do not ship, which is said in one line
        return
    assert image.ndim == 3 and image.dtype in (np.uint8, np.uint16)


def test_a_crafted_header_with_huge_dimensions_is_refused_before_decoding(golden_bitstream):
    body = bytearray(golden_bitstream[:-4])
    body[7:9] = (4096).to_bytes(2, "little")  # height
    body[9:11] = (65535).to_bytes(2, "little")  # width: just under 2^28 pixels, within the container
    with pytest.raises(BitstreamError, match="exceeds this decoder's limit"):
        decode(_with_crc(bytes(body)))
