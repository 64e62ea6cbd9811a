"""The library's own error types: what callers catch instead of numpy or h5py tracebacks."""


class ConvaeError(Exception):
    """Base class of every error convae-jax raises on purpose."""


class DataError(ConvaeError, ValueError):
    """Bad input data. The message names the file, the line (1-based) and the field."""

    def __init__(self, message: str, *, path=None, line: int | None = None, field: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            if field is not None:
                where += f" [{field}]"
            where += ": "
        super().__init__(where + message)
        self.path, self.line, self.field = path, line, field


class ConfigError(ConvaeError, ValueError):
    """A config value outside what the field allows."""


class ModelFileError(ConvaeError):
    """A saved model that is corrupted, truncated, or does not match its own config."""


class CheckpointError(ModelFileError):
    """A training checkpoint that is corrupted, truncated, or belongs to another config or data."""


class TrainingDiverged(ConvaeError):
    """The loss or the gradients became NaN or inf; `step` is the first update (1-based) at fault."""

    def __init__(self, message: str, *, step: int, checkpoint=None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint
