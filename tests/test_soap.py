"""SOAP (coolchic.soap): Adam in the eigenbasis of Shampoo's preconditioner, selected per
training phase."""

from dataclasses import replace

import pytest
import torch

from coolchic.config import get_arch
from coolchic.encode import encode
from coolchic.presets import Phase, get_preset, stable_repr
from coolchic.soap import Soap
from coolchic.train_batch import overfit_batch
from tests.conftest import synthetic_image
from tests.test_resume import Stop, _stop_at, save_every_iteration  # noqa: F401 (a fixture)


def test_without_a_rotation_it_is_torch_adam():
    torch.manual_seed(0)
    matrix = torch.nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    bias = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    twins = [torch.nn.Parameter(p.detach().clone()) for p in (matrix, bias)]
    adam = torch.optim.Adam([matrix, bias], lr=1e-2)
    soap = Soap([{"params": [twins[0]], "lr": 1e-2, "precondition": False},
                 {"params": [twins[1]], "lr": 1e-2}])  # a 1-D parameter is never rotated
    for _ in range(25):
        for p, q in ((matrix, twins[0]), (bias, twins[1])):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        adam.step()
        soap.step()
    assert torch.allclose(matrix, twins[0], rtol=0, atol=1e-14)
    assert torch.allclose(bias, twins[1], rtol=0, atol=1e-14)


def test_it_beats_adam_where_the_curvature_is_not_along_the_weights_axes():
    # least squares W X = Y whose inputs are correlated (ill-conditioned in a rotated basis)
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))[0]
    scales = torch.diag(torch.logspace(-1.5, 0.5, 8, dtype=torch.float64))
    x = basis @ scales @ torch.randn(8, 400, dtype=torch.float64)
    y = torch.randn(6, 8, dtype=torch.float64) @ x
    losses = {}
    for name, make in (("adam", torch.optim.Adam), ("soap", Soap)):
        w = torch.nn.Parameter(torch.zeros(6, 8, dtype=torch.float64))
        opt = make([w], lr=1e-2)
        for _ in range(1000):
            opt.zero_grad()
            loss = ((w @ x - y) ** 2).mean()
            loss.backward()
            opt.step()
        losses[name] = float(loss.detach())
    assert losses["soap"] < 1e-3 * losses["adam"]


def test_a_phase_names_a_known_optimizer_and_adam_leaves_the_recipe_fingerprint_as_it_was():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        Phase(100, 1e-2, "softround", optimizer="sgd")
    assert "optimizer" not in stable_repr(get_preset("slow"))
    soap = replace(get_preset("slow").phases[0], optimizer="soap")
    assert "optimizer='soap'" in stable_repr(soap)


SOAP_RECIPE = get_preset("slow").scaled_to(60)
SOAP_RECIPE = replace(SOAP_RECIPE, name="slow-soap",
                      phases=tuple(replace(p, optimizer="soap") for p in SOAP_RECIPE.phases))


def test_an_encode_trained_with_soap_stopped_and_resumed_makes_the_same_bitstream(tmp_path):
    image = synthetic_image()
    whole = encode(image, lmbda=2e-2, preset=SOAP_RECIPE, seed=1, arch="lite-noconv").data
    prefix = tmp_path / "out.bin.partial"
    with pytest.raises(Stop):  # in the first phase, between two eigendecompositions
        encode(image, lmbda=2e-2, preset=SOAP_RECIPE, seed=1, arch="lite-noconv", resume=prefix,
               callback=_stop_at(33))
    again = encode(image, lmbda=2e-2, preset=SOAP_RECIPE, seed=1, arch="lite-noconv", resume=prefix)
    assert again.data == whole


def test_batched_training_refuses_a_soap_recipe():
    images = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="trains with SOAP"):
        overfit_batch(images, get_arch("lite-noconv"), SOAP_RECIPE, [1e-2], seeds=[0])
