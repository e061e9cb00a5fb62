"""Bitstream -> image, the documented import path (``from coolchic.decode import decode``)
of the decoder package `coolchic.decoder`, whose `api` module holds these."""

from coolchic.decoder.api import DECODER_MAX_PIXELS, BitstreamInfo, codec_id, decode, describe

__all__ = ["DECODER_MAX_PIXELS", "BitstreamInfo", "codec_id", "decode", "describe"]
