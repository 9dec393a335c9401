"""publish: market data per market, user streams per account, and the read models the API serves.

Inputs (one agent, co-partitioned): ``orders.events`` (the matcher's order events and
`BookChanged`), ``orders.rejected`` (refused by validate or risk) and ``accounts.events``
(`BalanceChanged`; other account events are ignored), plus ``publish.clock``
(`ClockTick`, sent every few seconds by the process running publish: it moves the
24h windows when no trade happens). Outputs, read-model writes and
publish's table changelogs commit in one atomic step with the input offsets, so a
client reading a read model sees the state after some whole batch, never half of one.

Conventions: integers only. Prices in ticks, quantities in lots, amounts in minimal
units of their asset (the market spec converts; the API renders decimal strings).
Times are nanoseconds since the Unix epoch, event time (the `ts` of the command that
caused them, from the API's clock); per market, trade times are made monotonic (a
trade older than the previous one counts at the previous one's time).

Output topics (msgpack messages, see `pipeline.agents.publish.messages`):

- ``market.depth`` (key symbol) `DepthUpdate`: one per `BookChanged`, the changed
  levels' new totals (0 = removed). Update ids count level changes per market:
  U = previous u + 1, u = U + levels - 1 (Binance diff-depth semantics).
- ``market.bbo`` (key symbol) `BookTicker`: best bid/offer at the end of a batch in
  which it changed (coalesced per batch), with the depth update id it reflects.
- ``market.trades`` (key symbol) `Trade`: every trade, in trade-id order per market.
  The stream itself is the recent-trades history (entries carry several messages;
  filter by symbol); older history is in PostgreSQL.
- ``market.tickers`` (key symbol) `Ticker`: rolling 24h statistics, once per batch
  with trades in that market, and when a clock tick moved the window past a minute
  with trades (then ``close_ts`` is the tick's time; an empty window has zero volume
  and the last trade's price).
- ``market.candles`` (key symbol) `Candle`: per batch with trades, every candle the
  batch touched for 1s, 1m, 5m, 15m, 1h, 4h and 1d (a candle that a later trade
  closed comes once more with ``closed=True``).
- ``user.events`` (key account_id) `OrderUpdate` (executionReport: NEW, TRADE for each
  fill of each side, CANCELED, EXPIRED, TRADE_PREVENTION, REJECTED), `AccountUpdate`
  (the balances a batch changed, one per account per batch), `BalanceDelta` (a deposit
  or withdrawal: Binance's balanceUpdate) and `CancelRejected`
  (a cancel that found no open order). Order reports keep the order's event order;
  balance updates may interleave differently with order reports from run to run
  (they come from another input stream).

Redis read models (keys and encodings; the API's contract). A market's keys carry its
symbol as a hash tag, with literal braces, on one server as on a cluster:
``depth:{BTCUSDT}:bids`` (names from `pipeline.agents.publish.readmodel`). So on a
cluster every key of one market is in one slot: publish's writes of a market in one
commit land together (in the commit script if the slot is publish's own, else as one
outbox entry for that slot, applied by one forwarder script), and a reader can read
them in one MULTI/EXEC. Account and order keys below are not tagged. Below, ``SYMBOL``
stands for the symbol and the braces are part of the key:

- ``depth:{SYMBOL}:bids``, ``depth:{SYMBOL}:asks``: hash, price ticks -> total lots
  (decimal strings), the whole book. ``depth:{SYMBOL}:id``: string, the last update id
  (u) that book reflects. Written in the same commit: read all three in one
  MULTI/EXEC for a consistent snapshot + lastUpdateId (on a cluster too).
- ``bbo:{SYMBOL}``: hash of `BookTicker` fields (``ts``, ``update_id``,
  ``bid_price_ticks``, ``bid_qty_lots``, ``ask_price_ticks``, ``ask_qty_lots``;
  0 = empty side), decimal strings (publish's start-up write leaves ``ts`` as it was:
  absent after an upgrade without the upgrade tool, until the best bid or offer changes).
- ``ticker:{SYMBOL}``: hash of `Ticker` fields (``ts``, ``open_ts``, ``close_ts``,
  ``open_ticks``, ``high_ticks``, ``low_ticks``, ``last_ticks``, ``last_qty_lots``,
  ``volume_lots``, ``quote_volume``, ``trades``, ``first_trade_id``,
  ``last_trade_id``), decimal strings. Rolling: it changes with trades and when
  the window (whole minutes) moves past old trades, within publish's clock period
  (5 s); a reader may still treat ``close_ts`` older than 24h as "no trades".
- ``candles:{SYMBOL}:<interval>``: sorted set, score = open time in *milliseconds*,
  member = JSON `Candle` (one member per window; replaced as it grows). Keeps the
  windows that opened within the last 1000 intervals before the newest one (at most
  1000 candles; windows without trades have no candle: fill them with the previous
  close). Page with ZRANGEBYSCORE / ZREVRANGEBYSCORE ... LIMIT.
- ``orders:open:<account_id>``: hash, ``<SYMBOL>:<order_id>`` -> JSON `OrderView`, the
  account's open orders (NEW or PARTIALLY_FILLED).
- ``order:<SYMBOL>:<order_id>``: string, JSON `OrderView` of every order ever seen
  (open, ended and rejected; kept without expiry: history belongs to PostgreSQL,
  trimming these is future work).
- ``clientid:<account_id>:<SYMBOL>``: hash, client order id -> order id (decimal),
  set when an order is first seen (not for DUPLICATE_CLIENT_ORDER_ID rejections).
- ``balances:<account_id>``: hash, asset -> JSON ``{"available": n, "locked": n}``.

Publish's own state is in changelog tables (see `PublishTables`); nothing reads them
but publish.

Start-up: publish writes only what a batch changed, except once when its agent starts
(`Publisher.market_read_models`, committed before the first batch): every known market's
whole depth (both sides replaced), best bid/offer, 24h ticker and current candles,
from its tables. Upgrading from untagged names (``depth:BTCUSDT:bids``, before the
hash tags) therefore needs no step for depth, book tickers and tickers; the candle
history (older than the current windows) is not in publish's state: move it with
``python -m pipeline.agents.publish.upgrade`` (renames every untagged market key to
its tagged name, merging candles, and deletes the old keys; docs/scaling.md).
"""
