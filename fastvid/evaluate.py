"""Video-level evaluation: views averaged per video, top-1/top-5 and mean class accuracy."""
from __future__ import annotations

import contextlib
import csv
import io
import logging
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from fastvid.atomic import write_text_atomic
from fastvid.distributed import DistInfo

__all__ = ["EvalResult", "evaluate", "evaluate_sharded", "summarize", "interleave_shards",
           "topk_accuracy", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix",
           "average_views", "score_views", "write_predictions"]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    top1: float
    top5: float
    mean_class_acc: float
    num_videos: int  # videos scored (bad samples excluded)
    scores: np.ndarray  # (num_samples, num_classes) float32, list order; NaN rows for bad samples
    labels: np.ndarray  # (num_samples,) int64; -1 for bad samples
    views: int = 1
    bad_samples: list = field(default_factory=list)

    @property
    def confusion(self) -> np.ndarray:
        """(K, K) int64 counts, rows = true class, columns = top-1 prediction (bad samples out)."""
        return confusion_matrix(self.scores, self.labels, self.scores.shape[1])

    def to_json(self) -> dict[str, Any]:
        """The metrics, the confusion matrix (``confusion[true][predicted]``, counts) and the
        per-class top-1 accuracy (None for a class without videos), both in class-index order."""
        conf = self.confusion
        return {"top1": self.top1, "top5": self.top5, "mean_class_acc": self.mean_class_acc,
                "num_videos": self.num_videos, "bad_samples": len(self.bad_samples),
                "per_class_accuracy": per_class_accuracy(conf),
                "class_videos": conf.sum(axis=1).tolist(),
                "confusion_matrix": conf.tolist()}


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present of per-class top-1 recall."""
    if len(labels) == 0:
        return float("nan")
    pred = scores.argmax(axis=1)
    recalls = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return float(np.mean(recalls))


def confusion_matrix(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts of (true class, top-1 prediction); rows labelled -1 are left out."""
    labels = np.asarray(labels, dtype=np.int64)
    good = labels >= 0
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    if good.any():
        pred = np.asarray(scores)[good].argmax(axis=1)
        np.add.at(conf, (labels[good], pred), 1)
    return conf


def per_class_accuracy(confusion: np.ndarray) -> list[Optional[float]]:
    """Top-1 recall per true class from a confusion matrix; None for a class without videos
    (the mean of the others is :func:`mean_class_accuracy`)."""
    totals = confusion.sum(axis=1)
    return [float(confusion[c, c] / n) if n else None for c, n in enumerate(totals)]


def average_views(logits: torch.Tensor, views: int, average: str = "prob") -> torch.Tensor:
    """(N*V, K) logits -> (N, K) scores: softmax then mean (``prob``) or mean of logits (``score``)."""
    logits = logits.float().reshape(-1, views, logits.shape[-1])
    if average == "prob":
        return logits.softmax(dim=-1).mean(dim=1)
    if average == "score":
        return logits.mean(dim=1)
    raise ValueError(f"average must be 'prob' or 'score', got {average!r}")


def score_views(model: Callable[[torch.Tensor], torch.Tensor], flat: torch.Tensor, views: int,
                average: str = "prob", max_batch: Optional[int] = None) -> torch.Tensor:
    """(N*V, ...) views -> (N, K) per-video scores (:func:`average_views` of the logits).

    ``max_batch`` splits the forward into chunks (engines with a batch limit, predict's
    windows). The caller sets the autocast and inference mode.
    """
    if not max_batch or flat.shape[0] <= max_batch:
        logits = model(flat)
    else:
        logits = torch.cat([model(chunk) for chunk in flat.split(max_batch)])
    return average_views(logits, views, average)


@torch.inference_mode()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, *, view_dims: int,
             average: str = "prob", autocast: Optional[Callable[[], Any]] = None,
             max_batch: Optional[int] = None, progress: bool = False) -> EvalResult:
    """Score every video of ``loader``.

    ``view_dims`` is the rank of one view in the batch contract without the batch axis (4 for
    (T, C, H, W) / (C, T, H, W)); a batch of rank ``view_dims + 2`` carries a views axis
    (N, V, ...), whose scores are averaged per ``average``. Rows labelled -1 (samples the loader
    could not decode) keep their place with NaN scores and are left out of the accuracies.
    ``max_batch`` splits the N*V forward into chunks (engines with a batch limit).
    """
    if isinstance(model, torch.nn.Module):
        model.eval()
    ctx = autocast or contextlib.nullcontext
    iterator = loader
    redirect: Any = contextlib.nullcontext()
    if progress:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        iterator = tqdm(loader, desc="eval", unit="batch", leave=False)
        redirect = logging_redirect_tqdm()  # log lines above the bar, not glued to it
    with redirect:
        return _score_batches(iterator, loader, model, ctx, view_dims, max_batch, average)


def _score_batches(iterator: Any, loader: Any, model: Any, ctx: Any, view_dims: int,
                   max_batch: Optional[int], average: str) -> Any:
    all_scores, all_labels = [], []
    views = 1
    for video, label in iterator:
        if video.dim() == view_dims + 2:
            n, views = video.shape[:2]
            flat = video.reshape(n * views, *video.shape[2:])
        else:
            n, views, flat = video.shape[0], 1, video
        with ctx():
            scores = score_views(model, flat, views, average, max_batch)
        all_scores.append(scores.cpu())
        all_labels.append(label.cpu().long())
    if not all_scores:
        raise ValueError("evaluation loader yielded no batches")
    scores = torch.cat(all_scores).numpy().astype(np.float32)
    labels = torch.cat(all_labels).numpy().astype(np.int64)
    return summarize(scores, labels, views, list(getattr(loader, "bad_samples", []) or []))


def summarize(scores: np.ndarray, labels: np.ndarray, views: int = 1,
              bad_samples: Optional[list] = None) -> EvalResult:
    """Accuracies of per-video ``scores`` (N, K); rows labelled -1 are bad samples (NaN scores)."""
    scores = np.array(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    bad = labels < 0
    scores[bad] = np.nan
    good_s, good_l = scores[~bad], labels[~bad]
    top1, top5 = topk_accuracy(good_s, good_l, 1), topk_accuracy(good_s, good_l, 5)
    mca = mean_class_accuracy(good_s, good_l)
    if bad.any():
        log.warning("%d of %d videos could not be decoded and were left out of the metrics",
                    int(bad.sum()), len(labels))
    return EvalResult(top1, top5, mca, int((~bad).sum()), scores, labels, views,
                      list(bad_samples or []))


def interleave_shards(parts: Sequence[tuple[np.ndarray, np.ndarray]],
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Put per-rank ``(scores, labels)`` back in list order.

    Rank ``r`` of ``W`` scored the records ``r, r + W, r + 2W, ...`` (``records[r::W]``: every
    video exactly once, no padding), so its row ``i`` is list row ``i * W + r``.
    """
    world = len(parts)
    if world == 0:
        raise ValueError("no shards to merge")
    total = sum(len(labels) for _, labels in parts)
    for r, (scores, labels) in enumerate(parts):
        expected = len(range(r, total, world))
        if len(labels) != expected or len(scores) != expected:
            raise ValueError(f"shard {r} of {world} has {len(labels)} labels / {len(scores)} "
                             f"score rows; records[{r}::{world}] of {total} has {expected}")
    num_classes = next(s.shape[1] for s, _ in parts if s.ndim == 2)
    scores = np.empty((total, num_classes), dtype=np.float32)
    labels = np.empty(total, dtype=np.int64)
    for r, (s, lab) in enumerate(parts):
        scores[r::world] = s
        labels[r::world] = lab
    return scores, labels


def evaluate_sharded(model: Callable[[torch.Tensor], torch.Tensor], loader: Optional[Any],
                     num_classes: int, dist_info: DistInfo, average: str = "prob",
                     autocast: Optional[Callable[[], Any]] = None, sync_buffers: bool = True,
                     **eval_kwargs: Any) -> Optional[EvalResult]:
    """Evaluate on every rank's shard of the val list; the merged result on rank 0, else None.

    ``loader`` yields this rank's ``records[rank::world]`` (None when that is empty); the
    scores of all ranks are gathered and put back in list order (:func:`interleave_shards`).

    Under DDP the ranks' BN running statistics differ slightly (DDP broadcasts rank 0's buffers
    at the start of each forward, then every rank updates them with its own batch), so rank 0's
    buffers - the ones the checkpoint keeps - are broadcast first (``sync_buffers``; pointless
    for a model every rank loaded from one file, impossible for an engine): the scores are those
    of the saved model, whichever rank computed them. ``eval_kwargs`` go to :func:`evaluate`.
    """
    if dist_info.distributed and sync_buffers and isinstance(model, nn.Module):
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
    part = None
    if loader is not None:
        part = evaluate(model, loader, view_dims=4, average=average, autocast=autocast,
                        **eval_kwargs)
    if not dist_info.distributed:
        return part
    if part is not None:
        mine = (part.scores, part.labels, part.views, part.bad_samples)
    else:  # fewer val videos than ranks
        mine = (np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64), 1, [])
    parts: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(parts, mine)
    if not dist_info.is_main:
        return None
    scores, labels = interleave_shards([(p[0], p[1]) for p in parts])
    views = max(p[2] for p in parts)
    result = summarize(scores, labels, views, [b for p in parts for b in p[3]])
    log.info("evaluated %d val videos on %d ranks", len(labels), dist_info.world_size)
    return result


def write_predictions(path: str | Path, result: EvalResult, records: Sequence[Any],
                      classes: Optional[Sequence[str]] = None,
                      root: Optional[str | Path] = None) -> Path:
    """One CSV row per video, in list order: ``index, video, label, label_name, pred,
    pred_name, correct, prob`` (the prediction's averaged score), ``label_prob``, ``top5``
    (space-separated class indices). A bad sample (label -1) keeps its row with empty
    prediction columns. ``video`` is relative to ``root`` when inside it. Written atomically.
    """
    path = Path(path)

    def name(index: int) -> str:
        return classes[index] if classes is not None and 0 <= index < len(classes) else ""

    def video(i: int) -> str:
        if i >= len(records):
            return ""
        p = str(getattr(records[i], "path", records[i]))
        if root is not None:
            try:
                return str(Path(p).relative_to(root))
            except ValueError:
                pass
        return p

    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["index", "video", "label", "label_name", "pred", "pred_name", "correct",
                     "prob", "label_prob", "top5"])
    for i, (row, label) in enumerate(zip(result.scores, result.labels)):
        label = int(label)
        if label < 0:
            writer.writerow([i, video(i), label, "", "", "", "", "", "", ""])
            continue
        top = np.argsort(-row, kind="stable")[:5]
        pred = int(top[0])
        writer.writerow([i, video(i), label, name(label), pred, name(pred), int(pred == label),
                         f"{row[pred]:.6g}", f"{row[label]:.6g}", " ".join(map(str, top))])
    write_text_atomic(path, buf.getvalue(), "predictions CSV")
    return path
