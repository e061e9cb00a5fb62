import numpy as np
import pytest


def synthetic_image(h: int = 24, w: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A small smooth image with an edge and mild noise, uint8 (h, w, channels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = [(x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256][:channels]
    img = np.stack(base, -1).astype(np.float64)
    img[h // 4 : h // 2, w // 3 : 2 * w // 3] = [200, 40, 90][:channels]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def image() -> np.ndarray:
    return synthetic_image()


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (small convolutions only slow down on more), then
    the thread count restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
