"""The one export step every engine backend starts from, and the checks run on its graph.

``torch.export.export`` turns an eval-mode model into an ``ExportedProgram`` whose batch dimension
is symbolic in ``[1, max_batch]``; AOTInductor, ONNX and Torch-TensorRT all compile that program,
so a model that exports once exports for every backend.
"""
from __future__ import annotations

import copy
from typing import Iterable, Optional, Sequence

import torch
import torch.nn as nn

from fastvid.errors import FastvidError
from fastvid.precision import DTYPES

__all__ = ["ExportError", "export_model", "graph_problems", "cast_for_precision",
           "validation_batch", "RNG_OPS"]


class ExportError(FastvidError):
    """``torch.export`` could not capture the model, or the captured graph is unfit for an engine."""


# Ops that draw random numbers: an engine built from a graph holding one gives different logits on
# every call (and TensorRT/ONNX may constant-fold it), so the export is refused.
RNG_OPS = frozenset({
    "bernoulli", "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm",
    "normal", "uniform", "multinomial", "exponential", "geometric", "cauchy", "log_normal",
    "native_dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
    "rrelu_with_noise", "poisson",
})
# Position of ``ceil_mode`` in the positional arguments of each ATen pooling op.
_CEIL_MODE_ARG = {
    "max_pool1d": 5, "max_pool2d": 5, "max_pool3d": 5,
    "max_pool1d_with_indices": 5, "max_pool2d_with_indices": 5, "max_pool3d_with_indices": 5,
    "avg_pool1d": 4, "avg_pool2d": 4, "avg_pool3d": 4,
}


def cast_for_precision(model: nn.Module, example: torch.Tensor,
                       precision: str) -> tuple[nn.Module, torch.Tensor]:
    """A copy of ``model`` and ``example`` in the precision's dtype (the inputs too, not autocast).

    Engines are strongly typed: the dtype of the weights and of the input decides the kernels,
    so fp16/bf16 engines are exported from a model cast as a whole.
    """
    if precision not in DTYPES:
        raise ExportError(f"unknown precision {precision!r}; expected one of {', '.join(DTYPES)}")
    dtype = DTYPES[precision]
    if dtype is torch.float32:
        return model, example.float()
    return copy.deepcopy(model).to(dtype), example.to(dtype)


def export_model(model: nn.Module, example: torch.Tensor, max_batch: int) -> torch.export.ExportedProgram:
    """Export ``model`` with a dynamic batch dimension ``[1, max_batch]`` on dim 0 of ``example``.

    The example is re-batched to 2 rows when possible: torch.export specialises a dimension of
    size 1, which would freeze the batch to 1.
    """
    if model.training:
        raise ExportError("export needs an eval-mode model (call model.eval()); train mode keeps "
                          "dropout and batch statistics in the graph")
    if max_batch < 1:
        raise ExportError(f"max batch must be >= 1, got {max_batch}")
    trace_batch = min(2, max_batch)
    if example.shape[0] >= trace_batch:
        x = example[:trace_batch].contiguous()
    else:
        x = example[:1].expand(trace_batch, *example.shape[1:]).contiguous()
    dynamic: Optional[tuple[dict[int, torch.export.Dim]]] = None
    if max_batch > 1:
        dynamic = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    try:
        with torch.no_grad():
            exported = torch.export.export(model, (x,), dynamic_shapes=dynamic)
    except Exception as exc:  # torch.export raises many types (UserError, GuardOnDataDependent, ...)
        raise ExportError(f"torch.export failed for {type(model).__name__} with input "
                          f"{tuple(x.shape)} and batch in [1, {max_batch}]: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                          ) from exc
    return exported


def _op_name(target: object) -> str:
    """``aten.max_pool2d.default`` -> ``max_pool2d``; non-ATen targets give their plain name."""
    name = getattr(target, "__name__", str(target))
    packet = getattr(target, "_overloadpacket", None)
    if packet is not None:
        name = getattr(packet, "__name__", name)
    return name.split(".")[0]


def _graphs(exported: torch.export.ExportedProgram | torch.fx.GraphModule) -> Iterable[torch.fx.Graph]:
    gm = exported.graph_module if isinstance(exported, torch.export.ExportedProgram) else exported
    for module in gm.modules():  # control-flow ops keep their branches in sub-GraphModules
        if isinstance(module, torch.fx.GraphModule):
            yield module.graph


def graph_problems(exported: torch.export.ExportedProgram | torch.fx.GraphModule) -> list[str]:
    """Reasons the exported graph is unfit for an engine; empty when it is fine.

    Looks for ``ceil_mode=True`` pooling (its output size rounds differently in TensorRT/ONNX
    runtimes and differs from BNInception's published shapes) and for random-number ops (an
    engine must be a pure function of its input).
    """
    problems: list[str] = []
    for graph in _graphs(exported):
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            name = _op_name(node.target)
            if name in _CEIL_MODE_ARG:
                idx = _CEIL_MODE_ARG[name]
                ceil = node.kwargs.get("ceil_mode", node.args[idx] if len(node.args) > idx else False)
                if ceil:
                    problems.append(f"{node.name}: {name} with ceil_mode=True")
            elif name in RNG_OPS:
                problems.append(f"{node.name}: random op {name}")
            elif name == "dropout":
                train = node.kwargs.get("train", node.args[2] if len(node.args) > 2 else True)
                if train:
                    problems.append(f"{node.name}: dropout in training mode (random)")
    return problems


def validation_batch(shape: Sequence[int], mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None, layout: str = "NTCHW",
                     seed: int = 0) -> torch.Tensor:
    """A seeded float32 batch that looks like a normalized video of ``shape``.

    Pixels are uniform in [0, 255] and normalized with the model's mean/std per channel, so the
    validation runs in the value range the engine will see; without mean/std it is N(0, 1).
    """
    gen = torch.Generator().manual_seed(seed)
    if mean is None or std is None:
        return torch.randn(*shape, generator=gen)
    pixels = torch.rand(*shape, generator=gen) * 255.0
    channel_dim = layout.upper().index("C")
    view = [1] * len(shape)
    view[channel_dim] = len(mean)
    if shape[channel_dim] != len(mean):
        raise ExportError(f"validation batch {tuple(shape)} in layout {layout} has "
                          f"{shape[channel_dim]} channels but mean has {len(mean)} values")
    m = torch.tensor(mean, dtype=torch.float32).view(view)
    s = torch.tensor(std, dtype=torch.float32).view(view)
    return (pixels - m) / s
