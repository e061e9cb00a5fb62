"""coolchic: overfitted neural image compression with a bit-exact integer decoder."""

__version__ = "0.5.0"
