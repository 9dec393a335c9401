"""Stream runtime and exchange agents: a Faust-style App over Redis Streams."""
