"""fastvid: train and serve TRN and TPN video action-recognition models fast."""
from .version import __version__

__all__ = ["__version__"]
