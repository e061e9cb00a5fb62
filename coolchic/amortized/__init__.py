"""Amortized (pretrained-encoder) codecs on coolchic's entropy coder and container (issue 6).

Shared foundations: `causal` (causal wave order, masks of masked 3-D convolutions, wavefront
schedule), `masked` (the float masked convolution and context model), `intnet` (the same
network in exact integer arithmetic), `probability` (integer PMFs from integer logits),
`codes` (coding a code tensor wave by wave with `coolchic.entropy.coder`), `registry`
(models and their stable ids), `codec` (the codec protocol and the container), `legacy`
(streams of the first amortized payload layout), `autoencoder` (transforms and helpers
the image codecs share), `training` (training loop with checkpoints and resume), `cli`.
Systems: `cwic` (a), `ccn` (b), `cpm` (c), `progressive` (d); `layered` is the embedded
progressive image codec, (d) coding the codes of (a) in truncatable layers. `checkpoints`
holds the shipped weights, `api` is what the command line calls.

Nothing is imported here, so that the integer decoding path can be used without torch.
"""
