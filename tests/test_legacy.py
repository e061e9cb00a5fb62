"""Format 2.0 and 3.0 files: refused by the decoder with a pointer to `coolchic upgrade`,
which rewrites them losslessly; format 4.0 files decode as they are and upgrade by a new
version byte."""

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coolchic.bitstream import BitstreamError
from coolchic.cli import app
from coolchic.decode import decode
from coolchic.legacy import upgrade
from tests.test_golden import _digest

GOLDEN = Path(__file__).parent / "golden"
V2 = (GOLDEN / "tiny-v2.bin").read_bytes()  # a golden file written by coolchic 0.2
V3 = (GOLDEN / "tiny-v3.bin").read_bytes()  # V2 as coolchic 0.3 rewrote it
V4 = (GOLDEN / "tiny.bin").read_bytes()  # V2 as coolchic 0.4 rewrote it (format 4.0)
# what coolchic 0.2 decodes V2 to, and the bytes of its 5.0 rewrite (frozen: the rewrite is
# deterministic)
V2_IMAGE = "(9, 13, 3) uint8 8daccf9d02eb23c7c4c54a44bb0872346290aafda2d934952ca8a87b50191578"
V5_SHA256 = "da57f5e4f65ddac7195435d3ceefa1a0b2f1ec0ba289129be7e9f54aaa9e16d3"


def test_format_2_and_3_files_are_refused_with_a_pointer_to_upgrade():
    with pytest.raises(BitstreamError, match=r"version 2\.0 .*coolchic upgrade.*coolchic 0\.2"):
        decode(V2)
    with pytest.raises(BitstreamError, match=r"version 3\.0 .*coolchic upgrade.*coolchic 0\.3"):
        decode(V3)


def test_upgrade_gives_a_file_of_the_same_image_from_every_old_format():
    new = upgrade(V2)
    assert hashlib.sha256(new).hexdigest() == V5_SHA256
    assert upgrade(V3) == new
    assert upgrade(V4) == new and V4[4] == 4 and new[4] == 5
    assert len(new) < len(V2)
    assert _digest(decode(new)) == V2_IMAGE


def test_a_format_4_file_decodes_as_it_is_to_the_same_image():
    assert _digest(decode(V4)) == V2_IMAGE


def test_upgrade_refuses_current_and_corrupt_files():
    with pytest.raises(BitstreamError, match=r"already format 5\.x; nothing to upgrade"):
        upgrade(upgrade(V2))
    corrupt = bytearray(V2)
    corrupt[20] ^= 0x40
    with pytest.raises(BitstreamError, match="checksum"):
        upgrade(bytes(corrupt))


def test_upgrade_command_writes_the_new_file(tmp_path):
    src = tmp_path / "old.bin"
    src.write_bytes(V2)
    result = CliRunner().invoke(app, ["upgrade", str(src)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "old-v5.bin"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == V5_SHA256
    assert f"{len(V2)} -> {out.stat().st_size} bytes" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["upgrade", str(out)])
    assert bad.exit_code == 2 and "nothing to upgrade" in bad.output and "Traceback" not in bad.output
