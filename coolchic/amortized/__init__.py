"""Amortized (pretrained-encoder) codecs on coolchic's entropy coder and container (issue 6).

Shared foundations: `causal` (causal wave order, masks of masked 3-D convolutions, wavefront
schedule), `masked` (the float masked convolution and context model), `intnet` (the same
network in exact integer arithmetic), `probability` (integer PMFs from integer logits),
`pmfcoder` (range coding with integer PMF rows), `codes` (coding a code tensor wave by
wave), `registry` (models and their stable ids), `codec` (the codec protocol and the
container), `autoencoder` (transforms and helpers the image codecs share), `training`
(training loop with checkpoints and resume), `cli`.
Systems: `cwic` (a), `ccn` (b), `cpm` (c), `progressive` (d).

Nothing is imported here, so that the integer decoding path can be used without torch.
"""
