"""The site as a whole: the worker registry and its capacity, the heartbeat that keeps a
worker in it, handing a dead worker's tasks back, and the disk gate."""
