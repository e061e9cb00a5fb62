"""Weights of the amortized codecs: the checkpoints shipped in this folder, and any `model.pt`.

A shipped checkpoint is ``<model>-q<quality>.pt`` in this folder (package data): the
weights of `coolchic amortized train`'s ``model.pt`` for model `<model>` of the registry
(for the progressive coder (d): of `coolchic amortized progressive-fit`'s), at nominal
quality 0..100. The shipped qualities of a model are its operating points: `--quality`
picks one of them exactly (`coolchic amortized list` prints them). The quality is written
in every stream the weights encode, and `coolchic decode` uses it to find the same weights
again (their CRC, also in the stream, is checked). Torch is imported only when weights are
loaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from coolchic.amortized import registry

FOLDER = Path(__file__).resolve().parent  # where the shipped checkpoints are
MAX_QUALITY = 100
DEFAULT_QUALITY = 50  # `--quality` when none is given: the shipped checkpoint nearest to it
_NAME = re.compile(r"^(?P<model>[a-z]+)-q(?P<quality>\d{1,3})\.pt$")


def shipped(name: str, *, folder: Path | None = None) -> dict[int, Path]:
    """Quality -> path of every shipped checkpoint of model `name` (a registry name)."""
    registry.get(name)
    folder = FOLDER if folder is None else Path(folder)
    found = {}
    for path in sorted(folder.glob(f"{name}-q*.pt")):
        match = _NAME.match(path.name)
        if match and match["model"] == name and int(match["quality"]) <= MAX_QUALITY:
            found[int(match["quality"])] = path
    return found


def qualities(name: str, *, folder: Path | None = None) -> tuple[int, ...]:
    """The qualities of model `name`'s shipped checkpoints (its operating points), ascending."""
    return tuple(sorted(shipped(name, folder=folder)))


def _train_hint(name: str) -> str:
    command = "progressive-fit --data DIR" if name == "progressive" else f"train {name}"
    return f"train one with 'coolchic amortized {command}' and pass --checkpoint PATH/model.pt"


def shipped_path(name: str, *, quality: float | None = None, folder: Path | None = None) -> Path:
    """The shipped checkpoint of `name` of exactly `quality`, or when None the default one:
    the shipped quality nearest DEFAULT_QUALITY (ties go to the lower quality).

    Raises:
        ValueError: quality outside 0..100, or no such checkpoint; the message names the
            qualities that are shipped (one line).
    """
    if quality is not None and not 0 <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must lie in 0..{MAX_QUALITY}, got {quality:g}")
    files = shipped(name, folder=folder)
    if quality is None:
        if not files:
            raise ValueError(f"no shipped {name} checkpoint in {FOLDER}; {_train_hint(name)}")
        return files[min(files, key=lambda q: (abs(q - DEFAULT_QUALITY), q))]
    if quality != int(quality) or int(quality) not in files:
        have = ", ".join(map(str, sorted(files)))
        raise ValueError(f"no shipped {name} checkpoint of quality {quality:g}; "
                         + (f"{name} ships qualities {have}" if files else _train_hint(name)))
    return files[int(quality)]


def load(path: str | os.PathLike, *, name: str | None = None):
    """The model of a `model.pt` or `checkpoint.pt` file of `coolchic amortized train`.

    Args:
        path: the file.
        name: when given, the registry name the file must hold.

    Returns:
        The model (an `AmortizedCodec`); its quality is the file's "quality" entry, else 0.

    Raises:
        ValueError: unreadable, not a checkpoint, or another model's.
    """
    import torch

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ValueError(f"no such checkpoint file: {path}") from None
    except Exception as error:  # torch reports a bad file with many exception types
        raise ValueError(f"{path} is not a coolchic checkpoint ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or not {"model", "config", "state"} <= set(payload):
        raise ValueError(f"{path} is not a coolchic amortized checkpoint")
    if name is not None and payload["model"] != name:
        raise ValueError(f"{path} holds {payload['model']} weights, not {name}")
    model = registry.get(payload["model"]).load().build(payload["config"])
    model.load_state_dict(payload["state"])
    for attribute, value in payload.get("attributes", {}).items():
        setattr(model, attribute, value)
    model.quality = int(payload.get("quality", 0))
    model.eval()
    return model


def load_shipped(name: str, *, quality: float | None = None, folder: Path | None = None):
    """The model of `shipped_path(name, quality=...)`, its quality set from the file name."""
    path = shipped_path(name, quality=quality, folder=folder)
    model = load(path, name=name)
    model.quality = int(_NAME.match(path.name)["quality"])
    return model


def load_shipped_by_crc(name: str, crc: int, *, folder: Path | None = None):
    """The shipped model of `name` whose `model_crc()` is `crc` (e.g. the cwic model whose
    codes a progressive coder was fitted on).

    Raises:
        ValueError: no shipped checkpoint of `name` has those weights.
    """
    for quality in qualities(name, folder=folder):
        model = load_shipped(name, quality=quality, folder=folder)
        if model.model_crc() == crc:
            return model
    raise ValueError(f"no shipped {name} checkpoint has the weights of CRC {crc:08x}")


def ship(source: str | os.PathLike, *, quality: int, folder: Path | None = None) -> Path:
    """Copy a `model.pt` (or `checkpoint.pt`) into the shipped checkpoints as
    ``<model>-q<quality>.pt``: weights, attributes, quality, and the whole config (every field,
    so that later changes of a model's defaults do not change shipped weights' meaning).

    Returns:
        The written path.
    """
    import dataclasses

    import torch

    if not 0 <= quality <= MAX_QUALITY:
        raise ValueError(f"quality must lie in 0..{MAX_QUALITY}, got {quality}")
    payload = torch.load(source, map_location="cpu", weights_only=False)
    model = load(source)
    body = {"model": payload["model"], "config": dataclasses.asdict(model.config),
            "state": model.state_dict(), "attributes": payload.get("attributes", {}),
            "quality": int(quality)}
    folder = FOLDER if folder is None else Path(folder)
    path = folder / f"{body['model']}-q{quality}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(body, tmp)
    os.replace(tmp, path)
    return path
