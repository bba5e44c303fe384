# One image for every herald process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY herald ./herald
COPY producers ./producers
COPY workers ./workers
COPY schedules ./schedules
RUN pip install --no-cache-dir . && useradd --create-home herald
USER herald
ENTRYPOINT ["herald"]
