"""The worker's Celery application: `celery -A worker.app worker -Q gpu,cpu`.

Importing this module reads the settings (and prepares the embedded broker folder); the API
builds its own application with `worker.config.make_celery(settings)` instead.
"""

from worker.config import make_celery

app = make_celery()
