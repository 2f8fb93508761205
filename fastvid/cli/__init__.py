"""The ``fastvid`` command line (click). Each command group lives in its own module."""
from __future__ import annotations

import logging

import click

from fastvid.version import __version__

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fastvid")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Train, evaluate, export and benchmark TRN/TPN video action recognition."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _register() -> None:
    # Each module adds its commands to ``cli``; a module whose feature has not landed is absent.
    import importlib

    for name in ("data", "train", "engine", "predict"):
        try:
            importlib.import_module(f"fastvid.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fastvid.cli.{name}":
                raise


_register()


def main() -> None:
    cli(prog_name="fastvid")
