"""The trader web UI assets."""
