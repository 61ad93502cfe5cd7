"""PyTorch Lightning under either of its package names (`pytorch_lightning` or `lightning`)."""
try:
    import pytorch_lightning as pl
except ImportError:  # the unified `lightning` package
    import lightning.pytorch as pl

__all__ = ["pl"]
