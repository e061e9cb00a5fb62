"""The decoder, bytes -> image, all of it in one place; no training code, no torch on the
CPU. Importing the package loads none of its modules (training code reads `constants`).

- `api`: the container's parse and checks, `decode` and `describe` (also `coolchic.decode`)
- `dispatch`: the device and the kernel chosen, in one place; the latent and synthesis calls
- `latents`: the numpy latent decoder, wave by wave (the order: `coolchic.entropy.latents`)
- `reconstruct`: the fixed-point upsampling and synthesis in numpy
- `reconstruct_torch`: the same in torch, for GPUs
- `native` + `decoder_kernels.cpp`: the same latent loop and synthesis in C++
- `constants`: the fixed-point constants every twin reads (docs/architecture.md)
"""
