"""The site as a whole: the worker registry and its capacity, the heartbeat that keeps a
worker in it, handing a dead worker's tasks back, the disk gate, and the host's GPU
allocator (gpu_allocator)."""
