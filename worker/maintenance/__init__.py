"""Maintenance domains, one module each (retention, files, sessions,
partitions, stats, outbox), run by the thin Celery tasks in
tasks/maintenance.py under the common rules of worker/maintenance/run.py.
See docs/maintenance.md."""
