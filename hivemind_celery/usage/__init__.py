"""Measuring a task: cgroup counters, NVML, the host, the sampler thread and per-step totals."""
