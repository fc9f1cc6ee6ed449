"""Moved to worker/architecture_validation.py (issue 16: one meaning per name). This alias
stays only until worker/app.py includes "worker.architecture_validation"; then delete it. The
task's name is the string VALIDATE_ARCHITECTURE either way, so queued messages still route."""

from worker.architecture_validation import validate_architecture

__all__ = ["validate_architecture"]
