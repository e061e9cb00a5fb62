"""The preset registry: named in order of cost, the default among them, renamed presets
refused with their new name."""

import pytest

from coolchic.presets import DEFAULT_PRESET, PRESETS, RENAMED, get_preset


def test_presets_are_listed_in_order_of_cost():
    names = list(PRESETS)
    assert names == ["fast", "medium", "slow"]
    costs = [sum(phase.iterations for phase in PRESETS[n].phases) for n in names]
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    trials = [PRESETS[n].refine_trials for n in names]
    assert trials == sorted(trials)
    assert DEFAULT_PRESET in PRESETS


def test_a_renamed_preset_is_refused_with_its_new_name():
    for old, new in RENAMED.items():
        assert old not in PRESETS and new in PRESETS
        with pytest.raises(ValueError, match=f"renamed '{new}'"):
            get_preset(old)
    with pytest.raises(ValueError, match="fast, medium, slow"):
        get_preset("nope")


def test_synthesis_gain_scales_the_first_synthesis_layer_at_the_start_in_either_training():
    from dataclasses import replace

    import torch

    from coolchic.config import get_arch
    from coolchic.model.batched import BatchedCoolChic
    from coolchic.presets import stable_repr
    from coolchic.train import overfit

    one_step = get_preset("fast").scaled_to(1)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    norms = {}
    for gain in (1.0, 0.1):
        model = overfit(image, get_arch("lite-noconv"), replace(one_step, synthesis_gain=gain), 1e-2, seed=4)
        norms[gain] = float(model.synthesis.mlp[0].weight.detach().norm())
    # one Adam step moves each of the 7 x 12 weights by at most its learning rate, 0.02
    assert abs(norms[0.1] - 0.1 * norms[1.0]) < 0.02 * (7 * 12) ** 0.5
    assert "synthesis_gain" not in stable_repr(get_preset("slow"))
    # batched training starts from the models single training starts from
    plain = BatchedCoolChic.from_seeds(get_arch("lite-noconv"), 16, 16, 3, [4])
    scaled = BatchedCoolChic.from_seeds(get_arch("lite-noconv"), 16, 16, 3, [4], synthesis_gain=0.1)
    first = "synthesis.mlp.0.weight"
    assert torch.equal(scaled.weights()[first], 0.1 * plain.weights()[first])
    others = [n for n, _ in plain.layout if n != first]
    assert all(torch.equal(scaled.weights()[n], plain.weights()[n]) for n in others)
