"""Integration tests: real PostgreSQL, Redis, RabbitMQ and worker processes; only push providers are faked."""
