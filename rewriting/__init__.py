"""Model rewriting: change a rule of a trained generator by a constrained low-rank edit of one layer."""
from .cpu_memory import reuse_freed_memory
from .deltas import apply_deltas, load_delta, revert_deltas, save_delta
from .edits.loading import load_edit
from .edits.spec import EditRequest, EditSpec, Region
from .models import load_generator
from .rewrite import RewriteResult, rewrite

__all__ = ["apply_deltas", "load_delta", "revert_deltas", "save_delta", "EditRequest", "EditSpec", "Region",
           "load_edit", "load_generator", "RewriteResult", "reuse_freed_memory", "rewrite"]
