"""The load generator's HTTP connection count follows the offered rate (Little's law), not a fixed 16."""

from bench.load.run import HTTP_WINDOW_S, default_connections


def test_http_connections_scale_with_the_offered_rate() -> None:
    assert default_connections("http", 40) == 16  # never below 16
    assert default_connections("http", 1000) == int(1000 * HTTP_WINDOW_S)
    assert default_connections("http", 5000) == 250  # 5k/s x 50 ms in flight
    assert default_connections("http", 1_000_000) == 256  # capped


def test_websocket_and_stream_keep_16() -> None:
    assert default_connections("ws", 5000) == 16
    assert default_connections("stream", 15000) == 16
