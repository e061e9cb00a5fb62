"""Build the registered weight priors (coolchic/weight_priors.json, spec §5.2.1) from
training encodes: for each decoder configuration and lambda, the mean of every decoder
weight over the training files (real values, times 2^16, rounded), then write the file and
its table and SHA-256 into bitstream_spec.md.

    python tools/build_weight_priors.py results/runs/bsds-prior/bitstreams/coolchic-quick

The training files are the quick preset's encodes of 256x256 centre crops of BSDS500
training images (`coolchic evaluate DIR --crop 256 --lmbda 1e-4,5e-4,4e-3,2e-2 --preset
quick --baselines none`), never the Kodak test images; results/weight-prior/README.md
gives the whole procedure and what the priors save. `--priors` and `--spec` write
elsewhere, to try the builder without touching the normative files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from coolchic.bitstream import FORMAT_MAJOR, MAGIC, SectionId, read_bitstream
from coolchic.config import ARCHS, DecoderConfig, UpsamplingConfig
from coolchic.legacy import upgrade
from coolchic.payload import PRIOR_FRAC, PRIORS_PATH, pack_config, unpack_config, unpack_weights

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "bitstream_spec.md"


def layers_of(config: DecoderConfig) -> DecoderConfig:
    """The configuration without its upsampling: a prior predicts layers only, and serves a
    decoder with or without learned taps (payload.WeightPrior.matches)."""
    return replace(config, upsampling=UpsamplingConfig())


def collect(folder: Path) -> dict[tuple, list[list[np.ndarray]]]:
    """{(layers' config, channels, lambda): per file, the real value of every layer tensor in
    stream order (learned taps left out)}."""
    out: dict[tuple, list[list[np.ndarray]]] = defaultdict(list)
    for path in sorted(folder.glob("*@*.bin")):
        data = path.read_bytes()
        if data[len(MAGIC)] != FORMAT_MAJOR:  # older files: their lossless rewrite
            data = upgrade(data)
        header, sections = read_bitstream(data)
        config = unpack_config(sections[SectionId.CONFIG])
        weights = unpack_weights(sections[SectionId.WEIGHTS], config, header.channels)
        real = []
        for q in weights.layers():
            real += [q.weight * 2.0 ** -q.w_frac, q.bias * 2.0 ** -q.b_frac]
        out[(layers_of(config), header.channels, float(path.stem.split("@")[1]))].append(real)
    return out


def build(folder: Path, *, min_files: int = 8) -> tuple[str, str]:
    """The priors file's text and the spec's priors table, learned from the bitstreams in
    `folder`: one prior per (named configuration, channels, lambda) with at least
    `min_files` files, ids from 1 in ARCHS order, then channels, then lambda.

    Raises:
        SystemExit: no prior, or more than 15 (the id is 4 bits; 0 means none).
    """
    names: dict[DecoderConfig, str] = {}
    for name, config in ARCHS.items():
        names.setdefault(layers_of(config), name)
    groups = collect(folder)
    keys = sorted((k for k in groups if k[0] in names and len(groups[k]) >= min_files),
                  key=lambda k: (list(ARCHS).index(names[k[0]]), k[1], k[2]))
    if not 1 <= len(keys) <= 15:
        raise SystemExit(f"{len(keys)} priors: need 1..15")
    priors, rows = [], []
    for i, key in enumerate(keys, start=1):
        config, channels, lmbda = key
        files = groups[key]
        means = [np.round(np.mean([f[t] for f in files], axis=0) * 2**PRIOR_FRAC).astype(np.int64)
                 for t in range(len(files[0]))]
        priors.append({"id": i, "config": pack_config(config).hex(), "channels": channels,
                       "lmbda": lmbda, "source": f"mean of {len(files)} quick-preset encodes of "
                       "256x256 centre crops of BSDS500 training images",
                       "means": [m.reshape(-1).tolist() for m in means]})
        rows.append(f"| {i} | {names[config]} | {channels} | {lmbda:g} | {len(files)} |")
    text = json.dumps({"frac": PRIOR_FRAC, "priors": priors}, separators=(",", ":")) + "\n"
    table = "\n".join(["| Id | Decoder (named configuration) | Channels | Lambda | Training files |",
                       "|---|---|---|---|---|", *rows])
    return text, table


def pin_in_spec(spec: str, digest: str, table: str) -> str:
    """`spec` with its priors hash and table (between their HTML comment markers) replaced."""
    spec = re.sub(r"<!-- priors-sha -->.*?<!-- /priors-sha -->",
                  f"<!-- priors-sha -->`{digest}`<!-- /priors-sha -->", spec, flags=re.S)
    return re.sub(r"<!-- priors-table -->.*?<!-- /priors-table -->",
                  f"<!-- priors-table -->\n{table}\n<!-- /priors-table -->", spec, flags=re.S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="training bitstreams, named IMAGE@LAMBDA.bin")
    parser.add_argument("--min-files", type=int, default=8, help="fewest files a prior is learned from")
    parser.add_argument("--priors", type=Path, default=PRIORS_PATH,
                        help="where to write the priors [coolchic/weight_priors.json]")
    parser.add_argument("--spec", type=Path, default=SPEC,
                        help="spec whose priors table and hash are rewritten [bitstream_spec.md]")
    args = parser.parse_args()
    text, table = build(args.folder, min_files=args.min_files)
    args.priors.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    args.spec.write_text(pin_in_spec(args.spec.read_text(), digest, table))
    print(table)
    print(f"{args.priors}: {len(text)} bytes, SHA-256 {digest}")


if __name__ == "__main__":
    main()
