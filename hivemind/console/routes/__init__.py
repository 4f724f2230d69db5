"""The console's routes, one router per area: auth (log in and out), pages (the
pages and their live fragments), api (JSON), tasks (stop, result zip), prefs
(preferences, pause, resume). Login and CSRF are dependencies (console/deps.py)."""
