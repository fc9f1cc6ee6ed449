"""The worker's Celery application: `python -m worker.launch -Q gpu,cpu` (worker/launch.py
starts `celery -A worker.app worker` with the node's layout).

Importing this module reads the settings (and prepares the embedded broker folder); the API
builds its own application with `worker.config.make_celery(settings)` instead.
"""

from celery.signals import worker_process_init

from worker.config import make_celery
from worker.layout import pin_gpu

app = make_celery()
worker_process_init.connect(pin_gpu, weak=False)
