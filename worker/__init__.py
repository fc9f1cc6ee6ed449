"""Celery side of the service. `worker.config`, `worker.dispatch`, `worker.state` and
`worker.reconcile` import no torch (the API enqueues with them); `worker.tasks` does, and is
loaded only by worker processes (`celery -A worker.app worker`)."""
