"""The core of veza-worker: settings, logging, the outbox, storage, the
scanner and images, and the domain steps as plain functions (files/,
messages/, maintenance/). Nothing here imports Celery, Flask, api/, tasks/
or worker/ (import-linter holds it to that): the web process, the workers
and the benchmarks all call the same functions."""
