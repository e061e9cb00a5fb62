"""The decoder's shared pieces. `constants`: the fixed-point constants every
implementation of upsampling and synthesis reads."""
