"""The ``fastvid`` command line (click). Each command group lives in its own module."""
from __future__ import annotations

import logging
import os

import click

from fastvid.version import __version__

__all__ = ["main", "cli"]


class _DropNoCudaRuntime(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." warning.

    torch.utils.cpp_extension logs it on import whenever a CUDA toolkit is installed but no GPU is
    visible; the engine commands import it on CPU too, where it says nothing about the run.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def _load_plugins_or_exit() -> None:
    from fastvid.plugins import PluginError, load_plugins

    try:
        load_plugins()
    except PluginError as exc:
        raise SystemExit(f"Error: {exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fastvid")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Train, evaluate, export and benchmark TRN/TPN video action recognition."""
    # Under torchrun every rank would print every line: only rank 0 logs (others their errors),
    # unless --verbose, where each line says its rank.
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank and not verbose:
        level = logging.ERROR
    else:
        level = logging.DEBUG if verbose else logging.INFO
    prefix = f"[rank {rank}] " if rank else ""
    logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    cpp_ext = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _DropNoCudaRuntime) for f in cpp_ext.filters):
        cpp_ext.addFilter(_DropNoCudaRuntime())


# Plugins first: the commands' --loader/--backend choices are read from the registries when
# the command modules are imported. Each module adds its commands to ``cli`` (imported after
# ``cli`` exists).
_load_plugins_or_exit()
from fastvid.cli import data, engine, predict, train  # noqa: E402,F401


def main() -> None:
    cli(prog_name="fastvid")
