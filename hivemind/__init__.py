"""HiveMind's edge for people: the `hivemind` command line, the demo and the
Node Pool client they share. It stands on hivemind_celery, bridge and nodepool;
none of those imports it."""
