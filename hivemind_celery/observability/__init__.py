"""What the site says about itself: structured logs, custom Celery signals,
health checks and the Prometheus collector."""
