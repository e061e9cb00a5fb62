"""Format 2.0 files: refused by the decoder with a pointer to `coolchic upgrade`, which
rewrites them losslessly."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from coolchic.bitstream import BitstreamError
from coolchic.cli import app
from coolchic.decode import decode
from coolchic.legacy import upgrade
from tests.test_golden import _digest

GOLDEN = Path(__file__).parent / "golden"
V2 = (GOLDEN / "tiny-v2.bin").read_bytes()  # the golden file as coolchic 0.2 wrote it


def test_a_format_2_file_is_refused_with_a_pointer_to_upgrade():
    with pytest.raises(BitstreamError, match=r"version 2\.0 .*coolchic upgrade.*coolchic 0\.2"):
        decode(V2)


def test_upgrade_gives_the_current_golden_file_and_the_same_image():
    new = upgrade(V2)
    assert new == (GOLDEN / "tiny.bin").read_bytes()  # the committed 3.0 golden file is this rewrite
    assert len(new) < len(V2)
    assert _digest(decode(new)) == (GOLDEN / "tiny.decoded.sha256").read_text().strip()


def test_upgrade_refuses_current_and_corrupt_files():
    with pytest.raises(BitstreamError, match=r"version 3\.0 is not supported by this reader \(2\.x\)"):
        upgrade((GOLDEN / "tiny.bin").read_bytes())
    corrupt = bytearray(V2)
    corrupt[20] ^= 0x40
    with pytest.raises(BitstreamError, match="checksum"):
        upgrade(bytes(corrupt))


def test_upgrade_command_writes_the_new_file(tmp_path):
    src = tmp_path / "old.bin"
    src.write_bytes(V2)
    result = CliRunner().invoke(app, ["upgrade", str(src)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "old-v3.bin"
    assert out.read_bytes() == (GOLDEN / "tiny.bin").read_bytes()
    assert f"{len(V2)} -> {out.stat().st_size} bytes" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["upgrade", str(out)])
    assert bad.exit_code == 2 and "not supported" in bad.output and "Traceback" not in bad.output
