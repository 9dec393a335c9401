"""`exchange bench`: an open-loop load generator for a running (or self-started) exchange.

Modules: `mix` (what to send), `senders` (HTTP, WebSocket API, straight into `orders.in`),
`watch` (trades on the published stream and on a WebSocket), `recorder` (HDR histograms,
joins, per-second series), `system` (an embedded exchange in a temp dir), `run` (the
schedule and the phases), `report` (table, JSON, PNG).
"""
