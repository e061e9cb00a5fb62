"""The Ray backend against a real local Ray instance: the same rows as the local backend
(timings aside), computed in Ray worker processes. Skipped when Ray is not installed."""

import os
from dataclasses import replace
from pathlib import Path

import pytest

from coolchic.evaluate.evaluation import evaluate
from coolchic.evaluate.runner import BackendOptions
from coolchic.evaluate.store import RunStore
from tests.test_evaluate_runner import (
    FakeCodec,
    factory,
    make_images,
    spec_for,
    without_timings,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray
REPOSITORY = str(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def local_ray():
    # Workers import the fake codec from tests/ and coolchic from the checkout.
    path = os.pathsep.join(filter(None, [REPOSITORY, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "images")


def test_ray_gives_the_same_rows_as_local_from_worker_processes(local_ray, images, tmp_path):
    spec = spec_for(images, tmp_path / "local", images=("img0", "img1"))
    evaluate(spec, codec_factory=factory(FakeCodec(str(tmp_path / "local.log"))))
    ray_log = tmp_path / "ray.log"
    evaluate(replace(spec, out=tmp_path / "ray"), BackendOptions(backend="ray"),
             codec_factory=factory(FakeCodec(str(ray_log))))
    local, remote = RunStore(tmp_path / "local").rows(), RunStore(tmp_path / "ray").rows()
    assert len(local) == 2 * (2 + 8)
    assert without_timings(local) == without_timings(remote)
    pids = {line.split()[1] for line in ray_log.read_text().splitlines()}
    assert pids and str(os.getpid()) not in pids
    assert (tmp_path / "ray" / "per_image.tsv").exists()


def test_ray_resumes_a_run_started_locally(local_ray, images, tmp_path):
    spec = spec_for(images, tmp_path / "run", baselines=())
    first = factory(FakeCodec(str(tmp_path / "a")))
    evaluate(replace(spec, images=("img0",)), codec_factory=first)
    log = tmp_path / "b"
    evaluate(spec, BackendOptions(backend="ray"), codec_factory=factory(FakeCodec(str(log))))
    assert len(log.read_text().splitlines()) == 2 * 2  # img1 and img2 only
    assert len(RunStore(tmp_path / "run").rows()) == 3 * 2
