"""Training: the SGD recipes of the papers with AMP, channels-last and DDP through torchrun.

* :mod:`.build` -- :func:`build_train_step`, the one way to build a step from a config (used by
  ``fastvid train`` and both benchmarks);
* :mod:`.step` -- :class:`TrainStep`, one optimisation step with no host synchronisation, and
  :class:`NonFiniteMonitor`;
* :mod:`.optim` -- the optimizer and the LR schedule builders;
* :mod:`.bn` -- precise BN before evaluation;
* :mod:`.cuda_graphs` -- :class:`GraphedTrainStep`, the whole step replayed from a CUDA graph;
* :mod:`.loop` -- :func:`train` and :func:`train_one_epoch`, checkpoints and exact resume.

Distributed helpers live in :mod:`fastvid.distributed`, sharded evaluation in
:mod:`fastvid.evaluate`.
"""
from .bn import recompute_bn_stats
from .cuda_graphs import CudaGraphBackend, GraphBackend, GraphedTrainStep, cuda_graphs_unsupported
from .build import AnyTrainStep, StepOptions, build_train_step, configure_compile_cache
from .loop import (EpochSetup, MetricsLog, StopFlag, TrainOptions, compile_unsupported,
                   process_start_time, train, train_one_epoch, truncate_metrics)
from .optim import build_lr_scheduler, build_optimizer, load_optimizer_state, lr_factor
from .step import NonFiniteMonitor, StepOutput, TrainStep, to_input_format

__all__ = ["build_train_step", "StepOptions", "AnyTrainStep", "TrainOptions", "train", "train_one_epoch", "EpochSetup", "MetricsLog", "StopFlag",
           "GraphedTrainStep", "GraphBackend", "CudaGraphBackend", "cuda_graphs_unsupported",
           "configure_compile_cache", "compile_unsupported",
           "process_start_time", "truncate_metrics",
           "TrainStep", "StepOutput", "NonFiniteMonitor", "to_input_format", "build_optimizer",
           "build_lr_scheduler", "load_optimizer_state", "lr_factor", "recompute_bn_stats"]
