"""Amortized (pretrained-encoder) codecs on coolchic's entropy coder and container.

Modules: `causal` (causal order, masks, wavefront schedule), `masked` (the masked 3-D
convolution for training). Nothing is imported here, so that the integer decoding path
can be used without torch.
"""
