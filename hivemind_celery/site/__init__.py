"""The site as a whole: the worker registry and its capacity, the heartbeat that keeps a
worker in it, handing a dead worker's tasks back, the disk gate, the host's GPU
allocator (gpu_allocator), the tasks running and ended (activity), the owner's
preferences (prefs) and the bridge's standing with the Node Pool (standing)."""

from hivemind_celery.site.activity import Activity
from hivemind_celery.site.prefs import PreferencesError, PrefsStore
from hivemind_celery.site.registry import Registry
from hivemind_celery.site.standing import read_standing

__all__ = ["Activity", "PreferencesError", "PrefsStore", "Registry", "read_standing"]
