"""Resumable encodes: an encode stopped at any point and run again with the same `resume`
prefix makes the bitstream of an encode never stopped, and trains only what was left."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import coolchic.checkpoint as ckpt
import coolchic.encode as encode_module
from coolchic.encode import encode
from coolchic.presets import Warmup, get_preset
from tests.conftest import synthetic_image

# three warm-up candidates of 10 iterations, then the preset's two phases (72 and 8): 110 in all
RECIPE = replace(get_preset("slow").scaled_to(80), warmup=Warmup(3, 10))
LMBDA = 2e-2


class Stop(Exception):
    """Stands for Ctrl-C, a killed job, a machine handed back."""


def _stop_at(iteration: int):
    def callback(progress) -> None:
        if progress.iteration == iteration:
            raise Stop
    return callback


@pytest.fixture(autouse=True)
def save_every_iteration(monkeypatch):
    monkeypatch.setattr(ckpt, "DEFAULT_EVERY_S", 0.0)


@pytest.fixture(scope="module")
def uninterrupted():
    return encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default").data


# in the 1st and 3rd warm-up candidates, at a candidate's end, in each phase, at the last step
@pytest.mark.parametrize("stop", [4, 23, 30, 41, 105, 110])
def test_an_encode_stopped_anywhere_goes_on_to_the_same_bitstream(tmp_path, uninterrupted, stop):
    prefix = tmp_path / "out.bin.partial"
    with pytest.raises(Stop):
        encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
               resume=prefix, callback=_stop_at(stop))
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin.partial.default"]
    seen = []
    again = encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
                   resume=prefix, callback=seen.append)
    assert again.data == uninterrupted
    assert [p.iteration for p in seen] == list(range(stop + 1, RECIPE.iterations + 1))
    assert list(tmp_path.iterdir()) == []  # the saves are removed with the bitstream made


def test_an_encode_stopped_after_training_does_not_train_again(tmp_path, uninterrupted, monkeypatch):
    prefix = tmp_path / "p"
    real = encode_module.code_model

    def fail(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(encode_module, "code_model", fail)
    with pytest.raises(Stop):
        encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default", resume=prefix)
    monkeypatch.setattr(encode_module, "code_model", real)
    seen = []
    again = encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
                   resume=prefix, callback=seen.append)
    assert again.data == uninterrupted and seen == []


def test_a_save_of_another_encode_is_ignored_with_a_warning(tmp_path, uninterrupted):
    prefix = tmp_path / "p"
    with pytest.raises(Stop):
        encode(synthetic_image(), lmbda=LMBDA / 2, preset=RECIPE, seed=3, arch="default",
               resume=prefix, callback=_stop_at(35))
    with pytest.warns(UserWarning, match="another encode .*lmbda"):
        again = encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
                       resume=prefix)
    assert again.data == uninterrupted


def test_an_unreadable_or_planted_save_is_ignored_with_a_warning(tmp_path, uninterrupted, capfd):
    prefix = tmp_path / "p"
    (tmp_path / "p.default").write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        assert encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
                      resume=prefix).data == uninterrupted

    class Planted:  # an object that would run code when unpickled by a plain torch.load
        def __reduce__(self):
            return (print, ("planted code ran",))

    torch.save({"format": ckpt.FORMAT, "payload": Planted()}, tmp_path / "p.default")
    with pytest.warns(UserWarning, match="unreadable"):
        assert encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
                      resume=prefix).data == uninterrupted
    assert "planted code ran" not in capfd.readouterr().out


def test_each_candidate_of_best_saves_and_resumes_on_its_own(tmp_path):
    image = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    lmbda = 1e-5  # auto picks default here, so best trains default and synth
    whole = encode(image, lmbda=lmbda, iterations=30, arch="best")
    prefix = tmp_path / "p"
    with pytest.raises(Stop):  # in synth's training, after default's is done
        encode(image, lmbda=lmbda, iterations=30, arch="best", resume=prefix, callback=_stop_at(45))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.default", "p.synth"]
    seen = []
    again = encode(image, lmbda=lmbda, iterations=30, arch="best", resume=prefix, callback=seen.append)
    assert again.data == whole.data and again.report.arch == whole.report.arch
    assert [p.iteration for p in seen] == list(range(46, 61))
    assert list(tmp_path.iterdir()) == []


def test_the_encode_command_goes_on_from_a_stopped_encode_of_the_same_output(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from coolchic.cli import app

    Image.fromarray(synthetic_image()).save(tmp_path / "img.png")
    out = tmp_path / "img.bin"
    with pytest.raises(Stop):  # the library encode the command would run, stopped at 20 of 40
        encode(tmp_path / "img.png", lmbda=LMBDA, iterations=40, resume=tmp_path / "img.bin.partial",
               callback=_stop_at(20))
    result = CliRunner().invoke(app, ["encode", str(tmp_path / "img.png"), "-l", str(LMBDA),
                                      "-o", str(out), "--iterations", "40"])
    assert result.exit_code == 0, result.output
    assert "found saved training in" in result.stderr
    assert out.read_bytes() == encode(tmp_path / "img.png", lmbda=LMBDA, iterations=40).data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.bin", "img.png"]
    CliRunner().invoke(app, ["encode", str(tmp_path / "img.png"), "-l", str(LMBDA), "-o",
                             str(out), "--iterations", "40", "--no-resume"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.bin", "img.png"]


def test_a_resumed_encode_reports_the_time_of_its_earlier_runs_too(tmp_path, monkeypatch):
    import time as clock

    real = ckpt.Checkpointer.save

    def slow_save(self, state):  # each save of the first run: 0.3 s more of "training"
        clock.sleep(0.3)
        return real(self, state)

    monkeypatch.setattr(ckpt.Checkpointer, "save", slow_save)
    with pytest.raises(Stop):
        encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
               resume=tmp_path / "p", callback=_stop_at(10))
    first_run = ckpt.saved_seconds(tmp_path / "p.default")
    assert first_run >= 0.3 * 9  # the 9 saves before the 10th
    monkeypatch.setattr(ckpt.Checkpointer, "save", real)
    start = clock.perf_counter()
    again = encode(synthetic_image(), lmbda=LMBDA, preset=RECIPE, seed=3, arch="default",
                   resume=tmp_path / "p")
    this_run = clock.perf_counter() - start
    # the encoder's clock starts after some set-up that `this_run` includes: 0.5 s of slack
    # for it on a loaded machine, still far below the 2.7 s of the first run it must count
    assert this_run + first_run * 0.9 - 0.5 <= again.report.encode_seconds <= this_run + first_run * 1.1
