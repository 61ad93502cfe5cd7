"""Errors a user can cause; each message names the bad input and the fix."""


class RewritingError(Exception):
    """Base class: raised for bad input; the CLI prints its message without a traceback."""


class CheckpointError(RewritingError):
    """A checkpoint is missing, unreadable, or does not fit the generator."""


class DownloadError(RewritingError):
    """A file could not be downloaded or failed verification."""


class EditSpecError(RewritingError):
    """An edit request is malformed, of an unknown version, or does not fit the generator."""


class MaskError(EditSpecError):
    """A mask cannot be decoded or marks nothing."""


class LayerError(RewritingError):
    """A layer number the generator does not have."""


class OptimizationError(RewritingError):
    """The rewrite diverged (NaN or infinite loss)."""


class WeightsUnavailableError(RewritingError):
    """Pretrained metric weights (LPIPS, Inception) are absent and cannot be downloaded."""


class PhotoError(RewritingError):
    """A photo to project cannot be read, has unusable channels, or is too large."""
