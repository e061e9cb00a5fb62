"""The amortized models, each named once with its stable numeric id.

An image codec's id is its `coolchic.bitstream.CodecId`, written in the container header;
`coolchic decode` finds the model from it. The progressive entropy coder (d) codes binary
codes; with the codes of the cwic model it was fitted on it is the PROGRESSIVE image codec
(`layered`), whose id it carries. Everything else about a model (its module, its default
configuration, its checkpoint) is derived from its entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from coolchic.bitstream import CodecId


@dataclass(frozen=True)
class ModelEntry:
    """One amortized model."""

    name: str  # command-line name, lower case
    codec_id: CodecId | None  # id in the container header; None for an entropy coder only
    title: str  # the paper's title
    citation: str  # authors, venue, year
    module: str | None  # module implementing it (`coolchic.amortized.<module>`); None: not yet

    @property
    def available(self) -> bool:
        return self.module is not None

    def load(self):
        """Import the implementing module.

        Raises:
            ValueError: the model is registered but not implemented in this version.
        """
        if self.module is None:
            raise ValueError(f"model {self.name!r} ({self.citation}) is not implemented in this "
                             "version of coolchic")
        return importlib.import_module(f"coolchic.amortized.{self.module}")

    def configs(self) -> dict[str, dict]:
        """The model's named sizes (its module's ``CONFIGS``: name -> config overrides);
        empty for a model without any (it cannot be trained with ``--config``)."""
        return dict(getattr(self.load(), "CONFIGS", {}))

    def config(self, config_name: str) -> dict:
        """The config overrides named `config_name`.

        Raises:
            ValueError: no such name; the message lists the model's names.
        """
        known = self.configs()
        if config_name not in known:
            raise ValueError(f"unknown {self.name} config {config_name!r}; expected one of "
                             f"{', '.join(known) or '(none)'}")
        return dict(known[config_name])


MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("cwic", CodecId.CWIC,
               "Learning Convolutional Networks for Content-weighted Image Compression",
               "Li, Zuo, Gu, Zhao, Zhang, CVPR 2018", "cwic"),
    ModelEntry("ccn", CodecId.CCN,
               "Efficient and Effective Context-Based Convolutional Entropy Modeling for "
               "Image Compression", "Li, Ma, You, Zhang, Zuo, IEEE TIP 2020", "ccn"),
    ModelEntry("cpm", CodecId.CPM, "Conditional Probability Models for Deep Image Compression",
               "Mentzer, Agustsson, Tschannen, Timofte, Van Gool, CVPR 2018", "cpm"),
    ModelEntry("progressive", CodecId.PROGRESSIVE,
               "Improved Lossy Image Compression with Priming and Spatially Adaptive Bit "
               "Rates for Recurrent Networks (its entropy coder for binary codes)",
               "Johnston et al., arXiv 1703.10114 (CVPR 2018)", "progressive"),
)


def names() -> tuple[str, ...]:
    return tuple(entry.name for entry in MODELS)


def get(name: str) -> ModelEntry:
    """The entry named `name`; ValueError listing the names otherwise."""
    for entry in MODELS:
        if entry.name == name:
            return entry
    raise ValueError(f"unknown amortized model {name!r}; expected one of {', '.join(names())}")


def by_codec_id(codec_id: int) -> ModelEntry:
    """The entry of an amortized codec id; ValueError otherwise."""
    for entry in MODELS:
        if entry.codec_id is not None and entry.codec_id == codec_id:
            return entry
    raise ValueError(f"codec id {codec_id} is not an amortized codec")
