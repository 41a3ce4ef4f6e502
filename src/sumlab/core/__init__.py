"""The bottom layer: imports nothing else from sumlab (errors, atomic files and hashing, runtime decisions)."""
