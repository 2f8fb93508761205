"""fastvid's exceptions: one root, :class:`FastvidError`, with the specific errors under it.

Everything that means bad input or an unavailable feature is a ``FastvidError``; the CLI shows
those as one line without a traceback (``fastvid.cli.common.friendly_errors``). Errors about a
config value or a list line also derive from ``ValueError``, as they always did, so code that
caught ``ValueError`` keeps working.
"""

__all__ = ["FastvidError", "ConfigError", "ListError", "DataError", "WeightsError",
           "CheckpointError", "BackendUnavailable", "TrainingAborted"]


class FastvidError(RuntimeError):
    """Base class for errors that mean bad input or an unavailable feature (shown without traceback)."""


class ConfigError(FastvidError, ValueError):
    """A config file or override is invalid; the message names the key and source."""


class ListError(FastvidError, ValueError):
    """A dataset list or folder is malformed; the message names file and line."""


class DataError(FastvidError):
    """A sample could not be read/decoded, or too many samples failed."""


class WeightsError(FastvidError):
    """A weights file cannot be read or does not fit the model."""


class CheckpointError(FastvidError):
    """A checkpoint is unreadable or belongs to another model/config."""


class BackendUnavailable(FastvidError):
    """A loader or engine backend needs a package or device that is missing."""


class TrainingAborted(FastvidError):
    """Training stopped on purpose (non-finite loss, too many bad samples, signal)."""
