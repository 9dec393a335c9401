"""Snapshots and recovery."""
