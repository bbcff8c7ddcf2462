# One image for every veza-worker process (api, relay, workers, beat, flower).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 veza
WORKDIR /app
# The runtime lock first (exact versions, hash-checked; its own layer, rebuilt
# only when the lock changes), then the project on top with nothing resolved,
# built by the locked setuptools (docs/dependencies.md).
# g++ only while pdqhash (published as source only) builds, then gone.
COPY requirements/lock.txt ./requirements/lock.txt
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && pip install --no-cache-dir --require-hashes -r requirements/lock.txt \
    && apt-get purge -y --auto-remove g++ && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md beat_schedule.py flowerconfig.py alembic.ini ./
COPY api ./api
COPY console ./console
COPY veza ./veza
COPY db ./db
COPY deploy/gunicorn.conf.py ./deploy/gunicorn.conf.py
COPY tasks ./tasks
COPY worker ./worker
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && pip check

# The storage volume mounts here; creating it owned by veza makes a fresh named
# volume inherit that ownership, so uploads can write to it.
RUN install -d -o veza -g veza /data/storage

USER veza
ENV STORAGE_DIR=/data/storage
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "0.0.0.0:8000", "api:create_app()"]
