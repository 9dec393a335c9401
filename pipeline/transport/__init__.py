"""Transports: where streams live (real Redis/Valkey, or memory for unit tests)."""
