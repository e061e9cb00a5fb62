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
