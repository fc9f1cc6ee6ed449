"""The service's domain layer, torch-free: what a job is and how it moves, shared by `api/`
(which creates and cancels jobs) and `worker/` (which runs them).

`state` (conditional row transitions), `sources` (a job's references resolved for its owner),
`ownership` (a user's rows), `broker` (the Celery application's configuration: queues and task
names) and `dispatch` (sending work by task name), `catalog` (the public catalog's rounds) and
`shipped` (catalog entries shipped with the package). Nothing here imports torch, `api` or
`worker` (import-linter contracts in pyproject.toml).
"""
