"""Latent quantization proxies and the training loop's use of them."""

from __future__ import annotations

import pytest
import torch

from coolchic.presets import Phase
from coolchic.quant import kumaraswamy_b, kumaraswamy_noise, make_quantizer, soft_round
from coolchic.train import _phase_quantizer


def test_soft_round_tends_to_rounding_at_low_temperature_and_identity_at_high():
    y = torch.linspace(-3.2, 3.2, 101)
    y = y[(y - torch.floor(y) - 0.5).abs() > 0.02]  # away from the half-integers
    assert torch.allclose(soft_round(y, 1e-3), torch.round(y), atol=1e-4)
    assert torch.allclose(soft_round(y, 50.0), y, atol=1e-3)


def test_soft_round_keeps_integers_and_half_integers_fixed_and_is_increasing():
    k = torch.arange(-4, 5, dtype=torch.float32)
    for t in (0.05, 0.3, 1.0):
        assert torch.allclose(soft_round(k + 0.5, t), k + 0.5, atol=1e-5)
        assert torch.allclose(soft_round(k + 1e-7, t), k, atol=1e-4)
        y = torch.linspace(-2, 2, 1001)
        assert bool((soft_round(y, t).diff() >= 0).all())  # float32 saturates at low T
        if t >= 0.3:
            assert bool((soft_round(y, t).diff() > 0).all())


def test_kumaraswamy_shape_one_is_uniform_and_larger_shapes_concentrate_around_zero():
    assert kumaraswamy_b(1.0) == 1.0
    torch.manual_seed(0)
    like = torch.empty(200_000)
    uniform = kumaraswamy_noise(like, 1.0)
    peaked = kumaraswamy_noise(like, 2.0)
    for u in (uniform, peaked):
        assert float(u.min()) >= -0.5 and float(u.max()) <= 0.5
    assert abs(float(uniform.var()) - 1 / 12) < 2e-3
    assert float(peaked.var()) < 0.6 * float(uniform.var())
    # the mode sits at 0: the central bin is the fullest of ten
    counts = torch.histc(peaked, bins=10, min=-0.5, max=0.5)
    assert int(counts.argmax()) in (4, 5)


def test_softround_proxy_passes_gradients_and_stays_within_one_of_its_input():
    torch.manual_seed(0)
    y = (torch.randn(1000) * 3).requires_grad_()
    q = make_quantizer("softround", temperature=0.2, noise_shape=1.5)(y)
    q.sum().backward()
    assert y.grad is not None and bool((y.grad > 0).all())
    assert float((q - y).detach().abs().max()) <= 1.0 + 1e-5


def test_phase_quantizer_anneals_temperature_from_start_to_end():
    phase = Phase(11, 1e-2, "softround", temperature=(0.5, 0.1), noise_shape=(1.0, 1.0))
    y = torch.full((4,), 0.3)
    torch.manual_seed(0)
    first = _phase_quantizer(phase, 0)(y)
    torch.manual_seed(0)
    reference = make_quantizer("softround", temperature=0.5, noise_shape=1.0)(y)
    assert torch.equal(first, reference)
    torch.manual_seed(0)
    last = _phase_quantizer(phase, 10)(y)
    torch.manual_seed(0)
    assert torch.equal(last, make_quantizer("softround", temperature=0.1, noise_shape=1.0)(y))


def test_gaussian_softround_noise_has_its_std_and_ends_nearer_rounding_than_uniform_noise():
    from coolchic.model.softround import gaussian_from_uniform

    torch.manual_seed(0)
    n = gaussian_from_uniform(torch.rand(400_000), 0.25)  # the batched trainer's draws
    assert abs(float(n.mean())) < 2e-3 and abs(float(n.std()) - 0.25) < 2e-3
    assert float(n.abs().max()) <= 4.76 * 0.25  # the clamped draws bound it
    y = (torch.randn(100_000) * 3).requires_grad_()
    q = make_quantizer("softround", temperature=0.1, noise_shape=0.1, noise="gaussian")(y)
    q.sum().backward()
    assert y.grad is not None and bool((y.grad >= 0).all())
    # the same value as composing soft_round with the noise drawn from the same generator state
    torch.manual_seed(1)
    z = y.detach()[:1000]
    got = make_quantizer("softround", temperature=0.2, noise_shape=0.25, noise="gaussian")(z)
    torch.manual_seed(1)
    noise = torch.randn_like(z) * 0.25
    assert torch.allclose(got, soft_round(soft_round(z, 0.2) + noise, 0.2), atol=1e-5)
    # at the end of the phase (T = 0.1) a Gaussian of std 0.1 keeps the proxy near the
    # rounded latents (mean distance about 0.02), uniform noise (Kumaraswamy a = 1) about 0.12
    with torch.no_grad():
        gauss_gap = float((q - torch.round(y)).abs().mean())
        uniform = make_quantizer("softround", temperature=0.1, noise_shape=1.0)(y)
        uniform_gap = float((uniform - torch.round(y)).abs().mean())
    assert gauss_gap < 0.04 and uniform_gap > 0.09


def test_a_gaussian_phase_anneals_its_std_and_names_its_noise():
    phase = Phase(11, 1e-2, "softround", temperature=(0.3, 0.1), noise_shape=(0.25, 0.1),
                  noise="gaussian")
    y = torch.linspace(-3, 3, 64)
    for step, (t, std) in ((0, (0.3, 0.25)), (10, (0.1, 0.1))):
        torch.manual_seed(0)
        got = _phase_quantizer(phase, step)(y)
        torch.manual_seed(0)
        assert torch.equal(got, make_quantizer("softround", temperature=t, noise_shape=std,
                                               noise="gaussian")(y))
    with pytest.raises(ValueError, match="kumaraswamy, gaussian"):
        Phase(11, 1e-2, "softround", noise="laplace")
    with pytest.raises(ValueError, match="std"):
        make_quantizer("softround", temperature=0.1, noise_shape=0.0, noise="gaussian")


def test_bad_softround_settings_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        make_quantizer("softround", temperature=0.0)
    with pytest.raises(ValueError, match="choose one of"):
        make_quantizer("gumbel")  # type: ignore[arg-type]


def _tiny_image() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, 16, 16, generator=g)


def test_warm_up_keeps_the_candidate_of_lowest_true_cost_and_counts_its_iterations():
    from coolchic.config import get_arch
    from coolchic.model.coolchic import CoolChic
    from coolchic.presets import Preset, Warmup
    from coolchic.train import EAGER, _Run, _warm_up, overfit

    phases = (Phase(6, 1e-2, "softround", latent_lr=5e-2, eval_every=3),)
    preset = Preset("t", phases, "test", warmup=Warmup(3, 4))
    assert preset.iterations == 3 * 4 + 6
    seen = []
    model = overfit(_tiny_image(), get_arch("lite"), preset, 1e-3, callback=seen.append, compile="off")
    assert [p.iteration for p in seen] == list(range(1, preset.iterations + 1))
    assert all(p.total == preset.iterations for p in seen)
    assert isinstance(model, CoolChic)

    torch.manual_seed(0)
    start = CoolChic(get_arch("lite"), 16, 16, 3)
    run = _Run(_tiny_image(), 1e-3, EAGER, None, preset.iterations)
    finals = []
    original = _Run.true_loss

    def spy(self, m):
        loss = original(self, m)
        finals.append((loss, m))
        return loss

    _Run.true_loss = spy
    try:
        best = _warm_up(start, run, preset, seed=0)
    finally:
        _Run.true_loss = original
    assert run.done == 12
    # each candidate's last evaluation is the warm-up's own comparison
    compared = finals[1::2]
    assert len(compared) == 3 and len({id(m) for _, m in compared}) == 3
    assert best is min(compared, key=lambda lm: lm[0])[1]


def test_scaling_a_preset_scales_its_warm_up_and_keeps_the_total():
    from coolchic.presets import Preset, Warmup

    preset = Preset("t", (Phase(600, 1e-2, "softround"), Phase(100, 1e-4, "ste")), "t", Warmup(4, 50))
    scaled = preset.scaled_to(450)
    assert scaled.iterations == 450
    assert scaled.warmup == Warmup(4, 25)
    assert preset.scaled_to(5).warmup_iterations == 0


def test_greedy_weight_refinement_never_raises_the_true_cost():
    import numpy as np

    from coolchic.config import get_arch
    from coolchic.presets import get_preset
    from coolchic.quant import _Search
    from coolchic.train import overfit

    x = _tiny_image()
    image = np.round(x[0].permute(1, 2, 0).numpy() * 255).astype(np.int64)
    model = overfit(x, get_arch("lite"), get_preset("medium").scaled_to(30), 1e-3, compile="off")

    def total_cost(q, search):
        d = search.distortion(q.weights.mlp, q.weights.residual)
        from coolchic.entropy.fixedpoint import IntegerArm
        from coolchic.entropy.latents import latent_bits
        from coolchic.payload import weights_bits
        bits = sum(weights_bits(g) for g in (q.weights.arm, q.weights.mlp, q.weights.residual))
        bits += latent_bits(search.schedule, list(search.grids), IntegerArm(q.weights.arm))
        return d + 1e-3 * bits / search.n_pixels

    plain_search = _Search(model, image, 8, 1e-3)
    plain = plain_search.run(0)
    refined_search = _Search(model, image, 8, 1e-3)
    refined = refined_search.run(40)
    assert total_cost(refined, refined_search) <= total_cost(plain, plain_search) + 1e-12
    changed = sum(int((a.weight != b.weight).sum() + (a.bias != b.bias).sum())
                  for g in ("arm", "mlp", "residual")
                  for a, b in zip(getattr(plain.weights, g), getattr(refined.weights, g)))
    assert changed <= 3 * 40


def test_per_layer_steps_never_raise_the_true_cost():
    import numpy as np

    from coolchic.config import get_arch
    from coolchic.presets import get_preset
    from coolchic.quant import _Search
    from coolchic.train import overfit

    x = _tiny_image()
    image = np.round(x[0].permute(1, 2, 0).numpy() * 255).astype(np.int64)
    model = overfit(x, get_arch("default"), get_preset("medium").scaled_to(40), 1e-3, compile="off")
    search = _Search(model, image, 8, 1e-3)
    for name in ("arm", "mlp", "residual"):
        search.chosen[name] = search.group_steps(name)
        group_cost = search.layers_cost(name, search.chosen[name])
        per_layer = search.layer_steps(name)
        assert search.layers_cost(name, per_layer) <= group_cost
        # every layer still holds the rounding of its float weights on its own steps
        for q, (w, b) in zip(per_layer, search.float_layers[name]):
            assert np.array_equal(q.weight, np.round(w.detach().double().numpy() * 2.0 ** q.w_frac))
            assert np.array_equal(q.bias, np.round(b.detach().double().numpy() * 2.0 ** q.b_frac))
        search.chosen[name] = per_layer
