"""`hivemind console`: the contributor's web console (the site seen from the machine it runs on)."""
