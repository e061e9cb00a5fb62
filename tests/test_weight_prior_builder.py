"""tools/build_weight_priors.py, the builder of the normative coolchic/weight_priors.json:
it still reads today's bitstreams and writes a file that payload.weight_priors() accepts."""

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

from coolchic.bitstream import SectionId, read_bitstream
from coolchic.config import ARCHS
from coolchic.payload import PRIOR_FRAC, pack_config, unpack_config, unpack_weights

ROOT = Path(__file__).resolve().parent.parent
# a committed 256x256 crop encoded with lite-noconv (format 4.0: the builder upgrades it)
SOURCE = ROOT / "results" / "kodak-quick-7000" / "bitstreams" / "kodim01@0.02.bin"


def _builder():
    spec = importlib.util.spec_from_file_location("build_weight_priors",
                                                  ROOT / "tools" / "build_weight_priors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_prior_of_identical_files_is_their_weights(tmp_path):
    for name in ("a", "b"):
        shutil.copy(SOURCE, tmp_path / f"{name}@0.02.bin")
    text, table = _builder().build(tmp_path, min_files=2)
    (entry,) = json.loads(text)["priors"]
    assert entry["id"] == 1 and entry["lmbda"] == 0.02
    assert "| 1 | lite-noconv | 3 | 0.02 | 2 |" in table
    header, sections = read_bitstream(SOURCE.read_bytes())
    config = unpack_config(sections[SectionId.CONFIG])
    assert config == ARCHS["lite-noconv"] and entry["config"] == pack_config(config).hex()
    weights = unpack_weights(sections[SectionId.WEIGHTS], config, header.channels)
    expected = []
    for q in weights.layers():
        expected += [q.weight * 2 ** (PRIOR_FRAC - q.w_frac), q.bias * 2 ** (PRIOR_FRAC - q.b_frac)]
    assert [list(np.round(e).astype(np.int64).reshape(-1)) for e in expected] == entry["means"]


def test_the_spec_gets_the_hash_of_the_file_written(tmp_path):
    builder = _builder()
    spec = (ROOT / "bitstream_spec.md").read_text()
    text = '{"frac":16,"priors":[]}\n'
    digest = hashlib.sha256(text.encode()).hexdigest()
    out = builder.pin_in_spec(spec, digest, "| table |")
    assert f"<!-- priors-sha -->`{digest}`<!-- /priors-sha -->" in out
    assert "<!-- priors-table -->\n| table |\n<!-- /priors-table -->" in out
    assert out.replace(digest, "").count("priors-sha") == spec.count("priors-sha")
