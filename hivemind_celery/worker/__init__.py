"""The worker's main process: one thin module per bootstep or signal hook. celery_app
lists them all in one place; none of them adds itself on import."""
