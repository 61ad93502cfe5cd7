"""Model rewriting: change a rule of a trained generator by a constrained low-rank edit of one layer.

The public API below is imported on first use, so that `import rewriting.cli` (what run.py needs
before anything else) does not import torch and PyTorch Lightning, which take seconds.
"""
import importlib
import sys
import types

_EXPORTS = {
    "apply_deltas": "deltas", "load_delta": "deltas", "revert_deltas": "deltas", "save_delta": "deltas",
    "EditRequest": "edits.spec", "EditSpec": "edits.spec", "Region": "edits.spec", "load_edit": "edits.loading",
    "load_generator": "models", "RewriteResult": "rewrite", "rewrite": "rewrite",
    "reuse_freed_memory": "cpu_memory",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:  # a submodule, as `import rewriting; rewriting.models` found it when everything was imported at once
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule rewriting.rewrite binds it to this name; `rewriting.rewrite` stays the function.
        if name == "rewrite" and isinstance(value, types.ModuleType):
            value = getattr(value, "rewrite", value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
