from hivemind_celery.cli import main

main()
