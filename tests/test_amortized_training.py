"""Training data of the amortized models: one or several `--data` folders."""

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coolchic.amortized.training import image_files
from coolchic.cli import app
from tests.conftest import synthetic_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def bsds_like(tmp_path):
    """train/ (2 images), test/ (1 image, one in a sub-folder), val/ (2 images), as BSDS500."""
    layout = {"train": ["a.png", "b.png"], "test": ["sub/c.png"], "val": ["d.png", "e.png"]}
    for folder, names in layout.items():
        for seed, name in enumerate(names):
            path = tmp_path / "bsds" / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_image(24, 32, seed=seed)).save(path)
    (tmp_path / "bsds" / "train" / "notes.txt").write_text("not an image")
    return tmp_path / "bsds"


def test_several_data_folders_give_the_union_of_their_images_and_nothing_else(bsds_like):
    both = image_files([bsds_like / "train", bsds_like / "test"])
    assert [p.name for p in both] == ["c.png", "a.png", "b.png"]  # sorted by path: test/ < train/
    assert len(image_files(bsds_like)) == 5
    assert image_files(bsds_like / "train") == image_files([bsds_like / "train"])
    assert len(image_files([bsds_like / "train", bsds_like / "train"])) == 2  # each file once


def test_a_missing_or_empty_folder_among_several_raises(bsds_like, tmp_path):
    with pytest.raises(ValueError, match="no such data folder"):
        image_files([bsds_like / "train", tmp_path / "none"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        image_files([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no data folder"):
        image_files([])


def test_the_train_command_takes_repeated_data_folders_and_reports_the_image_count(bsds_like, tmp_path):
    result = CliRunner().invoke(app, [
        "amortized", "train", "cwic", "--data", str(bsds_like / "train"), "--data", str(bsds_like / "test"),
        "--steps", "1", "--batch", "1", "--crop", "16", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "3 training images under" in result.output
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=False)["images"] == 3
