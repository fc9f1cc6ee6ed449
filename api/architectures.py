"""Moved to api/uploaded_architectures.py (issue 16: one meaning per name). This alias stays
only until api/routers/submit.py imports `resolve_architecture` from there; then delete it."""

from api.uploaded_architectures import resolve_architecture

__all__ = ["resolve_architecture"]
