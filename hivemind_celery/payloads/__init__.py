"""Zips by reference: the content-addressed store in Redis, safe reading of task
zips (a stranger's) and the result zip with its execution report."""
