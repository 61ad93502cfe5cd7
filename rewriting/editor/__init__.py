"""The interactive editor: `python -m rewriting.editor` (or `rewriting-editor`) serves a local web page."""
from .session import EditorSession, Rule, mask_from_painting

__all__ = ["EditorSession", "Rule", "mask_from_painting"]
