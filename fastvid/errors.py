"""Exception types shared across fastvid's packages."""

__all__ = ["FastvidError", "DataError", "BackendUnavailable", "TrainingAborted"]


class FastvidError(RuntimeError):
    """Base class for errors that mean bad input or an unavailable feature (shown without traceback)."""


class DataError(FastvidError):
    """A sample could not be read/decoded, or too many samples failed."""


class BackendUnavailable(FastvidError):
    """A loader or engine backend needs a package or device that is missing."""


class TrainingAborted(FastvidError):
    """Training stopped on purpose (non-finite loss, too many bad samples, signal)."""
