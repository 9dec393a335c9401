"""HTTP and WebSocket API (Litestar): Binance Spot compatible under /api/v3, our own under /api/x.

Modules: `app` (create_app), `public` (market data), `orders` (signed trading and
account endpoints), `replace` (order/cancelReplace), `admin` (deposits, market
status; also used by `exchange admin`), `auth` (HMAC signatures, keys, timestamps),
`accounts` (accounts and API keys in Redis), `params` (Binance parameter parsing),
`errors` (Binance error JSON), `limits` (request-weight rate limits), `writer`
(group commit of commands into orders.in), `context` (shared state, config, formatting).
"""
