"""Celery side of the service: the tasks that run jobs with nadcore (`worker.tasks`, loaded only
by worker processes: `celery -A worker.app worker`), the reconciler, heartbeats, the sandbox and
the process layout. Job rows, the queue client and the catalog's rounds live in `jobs/`
(torch-free, shared with the API)."""
