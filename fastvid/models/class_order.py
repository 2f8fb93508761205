"""Which class each output row of a checkpoint means, and mapping it onto a dataset's classes.

A classifier's row ``i`` is "class ``i``" of the lists its authors trained on, and each code base
numbers classes its own way:

* **fastvid** saves the names (``classes`` in the checkpoint).
* **TRN-pytorch** (``process_dataset.py``: ``categories = sorted(categories)``), and TSM's
  scripts after it, index the classes of Jester and Something-Something by their names
  sorted: its published checkpoints are in alphabetical order, while fastvid's
  ``categories.txt`` keeps the label file's order.
* **mmaction2** follows its annotation tools (``tools/data/parse_file_list.py``): Jester and
  Something-Something V1 in the label CSV's order, V2 by the labels JSON's indices (the orders
  fastvid's ``prepare-*`` write), Kinetics by the names sorted after spaces became
  underscores (``label_map_k400.txt``).

:func:`source_classes` says, for a ``--class-order`` (``auto``, ``as-is``, ``sorted``,
``file:PATH``), which name each row of a checkpoint has; :func:`class_permutation` maps those
names onto the dataset's ``categories.txt`` by name (a :class:`~fastvid.errors.CheckpointError`
names what does not match); :func:`permute_class_rows` reorders every class-indexed ``Linear``
of the model (:attr:`fastvid.models.ModelSpec.class_rows`), so row ``j`` is ``categories.txt``'s
class ``j`` afterwards.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from fastvid.errors import CheckpointError, ConfigError

__all__ = ["CLASS_ORDERS", "check_class_order", "checkpoint_origin", "source_classes",
           "class_permutation", "class_modules", "permute_class_rows", "mmaction2_kinetics_order"]

log = logging.getLogger(__name__)

CLASS_ORDERS = ("auto", "as-is", "sorted", "file:PATH")
_KINETICS_SIZES = (400, 600, 700)


def check_class_order(value: str) -> str:
    """``value`` if it is a valid ``--class-order``; ConfigError otherwise."""
    if value in ("auto", "as-is", "sorted") or (value.startswith("file:") and len(value) > 5):
        return value
    raise ConfigError(f"--class-order {value!r}: expected auto, as-is, sorted or file:PATH")


def checkpoint_origin(raw: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """``fastvid``, ``trn-pytorch``, ``mmaction2`` or ``unknown``, from the file's keys.

    fastvid checkpoints carry ``fastvid_version``/``config``; TRN-pytorch's ``main.py`` saves
    ``{epoch, arch, state_dict, best_prec1}`` of a DataParallel TSN (``module.base_model.*``);
    mmaction2's models are ``backbone.* / cls_head.*`` (``meta`` beside ``state_dict``).
    """
    if "fastvid_version" in raw or ("model" in raw and isinstance(raw.get("config"), Mapping)):
        return "fastvid"
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state]
    if "best_prec1" in raw or any(k.startswith(("base_model.", "new_fc.", "consensus.")) for k in keys):
        return "trn-pytorch"
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        return "mmaction2"
    return "unknown"


def mmaction2_kinetics_order(names: Sequence[str]) -> list[str]:
    """Kinetics classes in mmaction2's order: sorted with ``"`` dropped and spaces as ``_``
    (its ``parse_kinetics_splits``), which is not always plain sorting (``' '`` < ``"'"`` <
    ``'_'``)."""
    return sorted(names, key=lambda n: n.replace('"', "").replace(" ", "_"))


def _read_names(path: Path) -> list[str]:
    """Class names in row order from a text file (one a line: categories.txt, mmaction2's
    ``label_map_*.txt``, TRN's ``category.txt``) or a JSON ``{"name": index}`` (Sth-v2's
    labels.json) / ``["name", ...]``."""
    if not path.is_file():
        raise ConfigError(f"--class-order file:{path}: file not found")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if isinstance(data, list) and all(isinstance(n, str) for n in data):
            return [n.strip() for n in data]
        if isinstance(data, dict):
            try:
                order = sorted(data.items(), key=lambda kv: int(kv[1]))
            except (TypeError, ValueError):
                raise ConfigError(f"{path}: expected {{\"class name\": index}}") from None
            return [k.replace("[", "").replace("]", "").strip() for k, _ in order]
        raise ConfigError(f"{path}: expected a JSON list of names or {{\"name\": index}}")
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise ConfigError(f"{path}: expected one class name per line, without blank lines")
    return names


def source_classes(order: str, origin: str, raw: Mapping[str, Any],
                   target: Optional[Sequence[str]], dataset_info: Mapping[str, Any],
                   where: str) -> tuple[Optional[list[str]], str]:
    """The class name of each output row of a checkpoint, and how that was decided.

    Args:
        order: ``--class-order``: ``auto`` (by the checkpoint's origin), ``as-is`` (the rows
            are already in ``target``'s order), ``sorted`` (alphabetical, TRN-pytorch's),
            ``file:PATH`` (the names in PATH, in row order).
        origin: :func:`checkpoint_origin`.
        raw: the checkpoint file's dict (fastvid's ``classes``).
        target: the dataset's class names (``categories.txt``), when known.
        dataset_info: the dataset's ``dataset.json`` (``{}`` when absent).
        where: the checkpoint, for messages.

    Returns:
        ``(names, why)``; ``names`` None means "as they are" (no mapping possible or needed).
    """
    order = check_class_order(order)
    if order == "as-is":
        return None, "--class-order as-is"
    if order.startswith("file:"):
        path = Path(order[5:])
        return _read_names(path), f"--class-order file:{path}"
    if order == "sorted":
        if target is None:
            return None, "--class-order sorted needs the dataset's class names (categories.txt)"
        return sorted(target), "--class-order sorted"
    # auto
    if origin == "fastvid":
        saved = raw.get("classes")
        return (list(saved), "the names saved in the checkpoint") if isinstance(saved, list) \
            else (None, "a fastvid checkpoint without class names")
    if target is None:
        return None, (f"a {origin} checkpoint: its class names are unknown without the dataset's "
                      f"categories.txt (--labels), or --class-order file:PATH")
    if origin == "trn-pytorch":
        return sorted(target), "TRN-pytorch's order (class names sorted, process_dataset.py)"
    if origin == "mmaction2":
        dataset = dataset_info.get("dataset")
        kinetics = dataset == "kinetics" or (dataset is None and len(target) in _KINETICS_SIZES)
        if kinetics:
            return mmaction2_kinetics_order(target), "mmaction2's Kinetics label map (names sorted)"
        if dataset_info.get("class_order") in (None, "label-file"):
            return None, ("mmaction2's order for this dataset: its label file's, as "
                          "categories.txt keeps it")
        return None, (f"mmaction2 checkpoint on a {dataset} dataset whose categories.txt came "
                      f"from {dataset_info.get('class_source')}: taken as it is (pass "
                      f"--class-order file:LABEL_MAP if its rows follow another order)")
    return None, f"{where}: origin unknown, rows taken in categories.txt's order"


def class_permutation(source: Sequence[str], target: Sequence[str], where: str,
                      how: str) -> Optional[list[int]]:
    """``perm`` with ``perm[j]`` = the row of ``source`` named ``target[j]``; None when the orders
    are the same. CheckpointError when the names do not match one to one."""
    if len(source) != len(target) or set(source) != set(target) or len(set(source)) != len(source):
        missing = [n for n in target if n not in set(source)]
        extra = [n for n in source if n not in set(target)]
        detail = []
        if len(source) != len(target):
            detail.append(f"{len(source)} names vs {len(target)} classes")
        if missing:
            detail.append(f"not in the checkpoint's names: {', '.join(map(repr, missing[:5]))}"
                          + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if extra:
            detail.append(f"not in categories.txt: {', '.join(map(repr, extra[:5]))}"
                          + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""))
        if len(set(source)) != len(source):
            detail.append("the checkpoint's names repeat")
        raise CheckpointError(f"{where}: cannot map its classes ({how}) onto the dataset's by "
                              f"name: {'; '.join(detail)}. Pass --class-order file:PATH (the "
                              f"names in the checkpoint's row order) or --class-order as-is")
    index = {name: i for i, name in enumerate(source)}
    perm = [index[name] for name in target]
    return None if perm == list(range(len(perm))) else perm


def class_modules(model: nn.Module, spec: Any, num_classes: int) -> list[tuple[str, nn.Linear]]:
    """The ``Linear`` modules with one output row per class (:attr:`ModelSpec.class_rows`, the
    first pattern that matches any; default the spec's classifier names)."""
    patterns = tuple(spec.class_rows) or tuple(re.escape(n) for n in spec.classifier)
    named = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for pattern in patterns:
        found = [(n, m) for n, m in named if re.fullmatch(pattern, n)
                 and m.out_features == num_classes]
        if found:
            return found
    return []


@torch.no_grad()
def permute_class_rows(model: nn.Module, spec: Any, perm: Sequence[int], where: str) -> list[str]:
    """Reorder the class rows of every class-indexed ``Linear`` by ``perm`` (row ``j`` becomes
    old row ``perm[j]``); returns the module names. CheckpointError when the model has none."""
    modules = class_modules(model, spec, len(perm))
    if not modules:
        raise CheckpointError(f"{where}: no classifier with {len(perm)} rows found in "
                              f"{type(model).__name__} to reorder")
    index = torch.as_tensor(list(perm), dtype=torch.long)
    for _, module in modules:
        module.weight.copy_(module.weight.index_select(0, index.to(module.weight.device)))
        if module.bias is not None:
            module.bias.copy_(module.bias.index_select(0, index.to(module.bias.device)))
    return [n for n, _ in modules]
