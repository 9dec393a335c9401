"""HTTP and WebSocket API (Litestar)."""
