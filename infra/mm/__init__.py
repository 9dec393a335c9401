"""The market maker (`exchange mm`, and part of `exchange up`): pure market making over the public API.

- `config`: `MarketMakerConfig` (hummingbot-style strategy parameters, per-market overrides, noise flow).
- `rules`: a market's tick, lot and filters from `exchangeInfo`, in integers.
- `quoting`: the pure logic (random walk, ladder, inventory skew and limits, reconciliation).
- `client`: a small signed Binance REST client (httpx).
- `bot`: `MarketMaker`, the refresh loop; `noise`: `NoiseTrader`, the small taker flow.
- `setup` and `service`: the bots' accounts and funds, and the background service `exchange up` runs.
"""
