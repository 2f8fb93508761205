"""The GPU check's tables come from the registries and priors keyed by registry names."""
from __future__ import annotations

from bench.gpu_check import PRESETS, check_models, group_pytest_args
from bench.gpu_plan import CostModel, Priors
from bench.runner import GRAPH_SUFFIX, inference_backends
from engines.backends import engine_backends
from fastvid.loaders import loader_backends
from fastvid.models import model_specs


def test_models_are_registered_specs_with_priors():
    models = check_models()
    assert models and set(models) <= {s.name for s in model_specs()}
    priors = Priors.load()
    for name, (kwargs, batch) in models.items():
        assert kwargs["num_classes"] == priors.get("train", name, "num_classes")
        assert batch == priors.get("train", name, "batch")


def test_infer_plan_has_every_cuda_engine_backend_with_a_build_prior():
    full = {b for b, _, _ in PRESETS["full"].infer_plan}
    cost = CostModel(Priors.load())
    for entry in engine_backends():
        if "cuda" in entry.preference:
            assert entry.name in full
            assert (entry.name + GRAPH_SUFFIX in full) == entry.cuda_graphs
        else:  # a CPU-only engine is not planned on the GPU machine
            assert entry.name not in full
    assert full <= set(inference_backends())
    for model in check_models():  # every planned engine has its build prior
        assert all(cost.infer(model, v, warmup=1, iters=1).seconds >= 0 for v in PRESETS["full"].infer_plan)


def test_loader_plan_follows_the_loader_registry():
    ranked = [b.name for b in loader_backends()]
    plan = PRESETS["full"].loader_plan
    assert {b for b, _ in plan} == set(ranked)
    assert plan[0] == (ranked[-1], "throughput") and plan[1] == (ranked[0], "throughput")
    priors = Priors.load()
    for name in ranked:  # priors keyed by the registry names
        for key in ("videos_per_s", "startup_s", "py_workers_start_s", "stages"):
            assert name in priors.get("loader", key), (key, name)


def test_test_groups_find_their_files_wherever_they_live():
    args = group_pytest_args("capture")
    assert args[-2:] == ["-m", "gpu"] and all(a.endswith(".py") for a in args[:-2])
    assert all(a.startswith("--ignore=tests/") for a in group_pytest_args("more")[3:])
