# One image for every herald process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HERALD_DATA_DIR=/var/lib/herald
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py requirements.lock ./
COPY herald ./herald
COPY producers ./producers
COPY workers ./workers
COPY schedules ./schedules
COPY api ./api
COPY cli ./cli
COPY devtools ./devtools
# The versions the tests ran with (requirements.lock as constraints), then an unprivileged user that
# owns only its data directory (beat's schedule file, the dev channel's output): the code stays root's. Its uid
# is the one the compose files' metrics volume is mounted for.
RUN pip install --no-cache-dir -c requirements.lock . \
    && useradd --uid 1000 --create-home herald \
    && install -d -o herald -g herald -m 700 /var/lib/herald
USER herald
VOLUME ["/var/lib/herald"]
# Exec form, and no init process: herald is the container's PID 1, so a worker's Celery node is <pool>-1@<hostname>,
# the node its compose healthcheck pings (tests/unit/test_compose.py).
ENTRYPOINT ["herald"]
