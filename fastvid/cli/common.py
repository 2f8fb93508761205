"""Options shared by the CLI commands, and the conversion of library errors to click errors."""
from __future__ import annotations

import contextlib
import errno
import functools
import signal
from typing import Any, Callable, Iterator, Optional

import click

__all__ = ["config_options", "class_order_option", "device_option", "loader_option", "load_cli_config",
           "load_inference_config", "resolve_device", "friendly_errors", "USER_ERRORS",
           "int_list", "labels_mapping"]



def labels_mapping(labels: Optional[str]) -> dict[str, Any]:
    """What ``--labels CATEGORIES.txt`` gives ``load_model_for_inference``: the dataset's class
    names (``target_classes``: the checkpoint's rows are mapped onto them) and the
    ``dataset.json`` beside the file (``dataset_info``: how the lists were made); both None
    without ``--labels``."""
    if not labels:
        return {"target_classes": None, "dataset_info": None}
    from pathlib import Path

    from fastvid.data.lists import read_categories
    from fastvid.data.prepare import read_dataset_info

    return {"target_classes": read_categories(labels),
            "dataset_info": read_dataset_info(Path(labels).parent)}


def device_option(fn: Callable) -> Callable:
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                        show_default=True, help="Where to run; auto picks CUDA when available.")(fn)


def loader_option(fn: Callable) -> Callable:
    from fastvid.loaders import loader_help, loader_names

    return click.option("--loader", type=click.Choice(loader_names()), default="auto", show_default=True,
                        help=f"Data loader. {loader_help()}")(fn)


def _class_order(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from fastvid.errors import ConfigError
    from fastvid.models.class_order import check_class_order

    try:
        return check_class_order(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def class_order_option(fn: Callable) -> Callable:
    """``--class-order``: which class each row of a checkpoint's classifier is."""
    return click.option(
        "--class-order", default="auto", show_default=True, callback=_class_order,
        metavar="auto|as-is|sorted|file:PATH",
        help="Class of each classifier row of the checkpoint, mapped by name onto the dataset's "
             "categories.txt: auto = the names a fastvid checkpoint saved, sorted names for "
             "TRN-pytorch/TSM, mmaction2's label map for the dataset (Kinetics: sorted); "
             "sorted; file:PATH (names in row order: a label map, category.txt or labels.json); "
             "as-is (already in categories.txt's order).")(fn)


def config_options(fn: Callable) -> Callable:
    """``-c CONFIG``, ``--set key=value`` (repeatable) and ``--device``."""
    fn = device_option(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a config key, e.g. --set train.lr=0.01 (repeatable).")(fn)
    fn = click.option("-c", "--config", "config_path", required=True,
                      type=click.Path(dir_okay=False),
                      help="YAML config file (see configs/).")(fn)
    return fn


def int_list(value: str, option: str, example: str) -> list[int]:
    """``"1,16"`` -> ``[1, 16]``; a non-integer item is a BadParameter naming ``option``."""
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected integers such as {example}",
                                 param_hint=option) from None


def load_cli_config(config_path: str, overrides: tuple[str, ...]):
    from fastvid.config import load_config

    return load_config(config_path, overrides)


def load_inference_config(config_path: str, overrides: tuple[str, ...],
                          checkpoint: Optional[str] = None, engine: Optional[str] = None):
    """The config for running a trained model: the YAML + ``--set``, with the data geometry the
    checkpoint (or an engine of the configured model) was trained with taking the YAML's place
    for every key not ``--set`` (:func:`fastvid.checkpoint.apply_checkpoint_geometry`;
    differences are logged in one line).

    Returns ``(cfg, raw)``: ``raw`` is the checkpoint read (for
    :func:`fastvid.checkpoint.load_model_for_inference`, so it is read once), or None.
    """
    from fastvid.checkpoint import apply_checkpoint_geometry, load_checkpoint

    cfg = load_cli_config(config_path, overrides)
    raw = None
    if checkpoint:
        raw = load_checkpoint(checkpoint)
        cfg = apply_checkpoint_geometry(cfg, raw, overrides, str(checkpoint))
    elif engine:
        import engines

        info = engines.read_meta(engine)[1]
        # Only for the same model: an engine of another model is refused naming every field
        # that differs (engines/compat.py), its normalisation included.
        if info.get("model_name") == cfg.model_name:
            cfg = apply_checkpoint_geometry(cfg, info, overrides, str(engine), what="engine")
    return cfg, raw


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device is available (torch.cuda.is_available() "
                               "is False); use --device cpu")
    return torch.device(name)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: shown as one clear line, not a traceback (every error
    fastvid raises on purpose is a FastvidError; a missing file named by the user too)."""
    from fastvid.errors import FastvidError

    return (FastvidError, FileNotFoundError)


USER_ERRORS = _user_errors


# Causes of a failed write that are the machine's state, not a bug: said in one line.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _terminated(signum: int, frame: Any) -> None:
    # SIGTERM's default action ends the process without unwinding: no ``finally``, so loaders'
    # worker processes and temporary engine files would be left behind. As an exception, every
    # cleanup runs, and the exit status is the conventional 128 + 15.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (a test calling the command from a thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def friendly_errors(fn: Callable) -> Callable:
    """Turn the library's input errors into ``click.ClickException`` (exit code 1, no traceback).

    Also: a write that fails for lack of space, a read-only file system or permissions is one
    line naming the file (:func:`fastvid.errors.write_error_message`), and SIGTERM unwinds the
    command like Ctrl-C does, so that it closes its loaders and removes its temporary files.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_unwinds():
                return fn(*args, **kwargs)
        except _user_errors() as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS or not exc.filename:
                raise
            from fastvid.errors import write_error_message

            raise click.ClickException(write_error_message("file", exc.filename, exc)) from exc

    return wrapper
