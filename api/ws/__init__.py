"""Binance-compatible WebSockets: market streams, user data streams, and the WebSocket API.

- `names`: stream names (`btcusdt@depth`, `!ticker@arr`, ...) parsed and checked.
- `payloads`: market messages rendered as Binance stream events.
- `userdata`: listenKeys (REST) and user events rendered as Binance events.
- `connection`: one client socket with a bounded send queue (slow consumers are dropped).
- `hub`: the single fan-out reader of the published streams per API process.
- `streams`: the `/ws/...` and `/stream` endpoints (SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS).
- `wsapi`: `/ws-api/v3` order entry (`order.place`, `order.cancel`, `order.status`).

Heartbeats are the server's: uvicorn pings every `ws_ping_interval` (20 s by default,
as Binance does) and answers client pings.
"""
