"""The `coolchic` script's lean path (`coolchic.entry`): `decode` and `--version` without
typer give the typer app's output and exit status, what it does not read goes to typer,
its styling is rich's, and `python -m coolchic` runs it."""

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coolchic.cli import app
from coolchic.cli_decode import styled, version_line
from coolchic.entry import main, parse_decode

GOLDEN = Path(__file__).parent / "golden" / "tiny.bin"
runner = CliRunner()


def _lean(capsys, args: list[str]) -> tuple[int, str, str]:
    status = main(args)
    out = capsys.readouterr()
    return status, out.out, out.err


def _typer(args: list[str]) -> tuple[int, str, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def _timeless(text: str) -> str:
    return re.sub(r"decoded in \d+\.\d{3} s", "decoded in T s", text)


@pytest.fixture
def streams(tmp_path) -> Path:
    (tmp_path / "a.bin").write_bytes(GOLDEN.read_bytes())
    (tmp_path / "b.bin").write_bytes(GOLDEN.read_bytes())
    (tmp_path / "junk.bin").write_bytes(b"not a bitstream at all" * 4)
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.mark.parametrize("case", ["one", "several", "corrupt", "missing", "one bad of three",
                                  "layers", "device", "not a folder"])
def test_the_lean_decode_prints_and_exits_as_the_typer_command_does(capsys, streams, case):
    s = str(streams)
    args = {
        "one": [f"{s}/a.bin", "-o", f"{s}/a.png"],
        "several": [f"{s}/a.bin", f"{s}/b.bin", "--output", f"{s}/out"],
        "corrupt": [f"{s}/junk.bin", "-o", f"{s}/junk.png"],
        "missing": [f"{s}/missing.bin"],
        "one bad of three": [f"{s}/a.bin", f"{s}/junk.bin", f"{s}/b.bin", f"--output={s}/out"],
        "layers": [f"{s}/a.bin", "--layers", "2"],
        "device": [f"{s}/a.bin", "--device", "tpu"],
        "not a folder": [f"{s}/a.bin", f"{s}/b.bin", "-o", f"{s}/a.bin"],
    }[case]
    assert parse_decode(args) is not None  # the lean path, not typer's
    lean = _lean(capsys, ["decode", *args])
    images = {p: p.read_bytes() for p in sorted(streams.rglob("*.png"))}
    typer_ = _typer(["decode", *args])
    assert (lean[0], _timeless(lean[1]), lean[2]) == (typer_[0], _timeless(typer_[1]), typer_[2])
    assert images == {p: p.read_bytes() for p in sorted(streams.rglob("*.png"))}
    if case in ("one", "several"):
        assert lean[0] == 0 and lean[1].count("decoded in") == len(images) > 0
    else:
        assert lean[0] == 2 and lean[2].startswith("error: ") and "Traceback" not in lean[2]


def test_the_lean_version_is_the_typer_version(capsys):
    status, out, err = _lean(capsys, ["--version"])
    assert (status, out, err) == _typer(["--version"]) == (0, version_line() + "\n", "")


@pytest.mark.parametrize("args", [[], ["--help"], ["a.bin", "--help"], ["a.bin", "-h"],
                                  ["a.bin", "--out", "x"], ["a.bin", "-ox.png"], ["a.bin", "-o"],
                                  ["a.bin", "-o", "--device"],
                                  ["a.bin", "--layers", "two"], ["a.bin", "--layers", "-1"], ["-"],
                                  ["--", "a.bin"], [""], ["a.bin", "--output="]])
def test_what_the_lean_parser_does_not_read_goes_to_typer(capsys, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)  # where a.bin is missing
    monkeypatch.setattr(sys, "argv", ["coolchic"])  # the program name in typer's usage lines
    assert parse_decode(args) is None
    with pytest.raises(SystemExit) as exit_:
        main(["decode", *args])
    out = capsys.readouterr()
    assert (exit_.value.code, out.out, out.err) == _typer(["decode", *args])
    assert exit_.value.code == (0 if "--help" in args else 2) and "Traceback" not in out.err


def test_other_commands_go_to_typer(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["info", str(GOLDEN)])
    assert exit_.value.code == 0 and "MAC/pixel" in capsys.readouterr().out


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1"}, {"FORCE_COLOR": "1", "NO_COLOR": "1"},
                                 {"FORCE_COLOR": "1", "TERM": "dumb"}, {"FORCE_COLOR": ""},
                                 {"TTY_COMPATIBLE": "1"}, {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"}])
def test_lines_are_styled_as_rich_styles_them(monkeypatch, env):
    from rich.console import Console

    for name in ("FORCE_COLOR", "NO_COLOR", "TERM", "TTY_COMPATIBLE", "COLORTERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = io.StringIO()
    Console(file=stream, soft_wrap=True).print("[bold green]x.png[/]: 1x1x3 decoded", highlight=False)
    assert styled("x.png", "1;32", io.StringIO()) + ": 1x1x3 decoded\n" == stream.getvalue()


def test_python_dash_m_coolchic_prints_the_version():
    result = subprocess.run([sys.executable, "-m", "coolchic", "--version"], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, version_line() + "\n", "")


def test_the_lean_decode_imports_neither_typer_rich_pillow_nor_torch(tmp_path):
    code = ("import sys; from coolchic.entry import main; status = main(sys.argv[1:]); "
            "loaded = [m for m in ('typer', 'click', 'rich', 'PIL', 'torch') if m in sys.modules]; "
            "print(loaded); sys.exit(status or bool(loaded))")
    args = ["decode", str(GOLDEN), "-o", str(tmp_path / "x.png")]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "x.png").exists()
