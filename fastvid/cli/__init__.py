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


# Each module adds its commands to ``cli`` (imported after ``cli`` exists).
from fastvid.cli import data, engine, predict, train  # noqa: E402,F401


def main() -> None:
    cli(prog_name="fastvid")
