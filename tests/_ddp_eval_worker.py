"""torchrun worker of test_train::test_sharded_eval_matches_one_process.

Every rank builds the same tiny model but gives its BN running statistics rank-dependent values
(as DDP leaves them after training), scores ``videos[rank::world]`` with
:func:`fastvid.evaluate.evaluate_sharded`, and rank 0 saves the merged scores and labels.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from fastvid.distributed import init_distributed
from fastvid.evaluate import evaluate_sharded

from _ddp_eval_data import NUM_CLASSES, make_data, make_model  # the script's folder is on sys.path


def main(num_videos: int, out: str) -> None:
    info = init_distributed("cpu")
    model = make_model(bn_shift=float(info.rank))
    videos, labels = make_data(num_videos)
    mine = list(range(info.rank, num_videos, info.world_size))
    chunks = [mine[j:j + 2] for j in range(0, len(mine), 2)]
    loader = [(videos[c], labels[c]) for c in chunks] or None  # None: an empty shard
    result = evaluate_sharded(model, loader, NUM_CLASSES, info)
    if info.is_main:
        np.savez(out, scores=result.scores, labels=result.labels, top1=result.top1,
                 num_videos=result.num_videos, confusion=result.confusion)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
