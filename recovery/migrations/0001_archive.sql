-- The persister's history tables (see recovery/persister.py). Money and quantities are integers:
-- prices in ticks and quantities in lots (bigint), amounts in minimal units of their asset (numeric).

CREATE TABLE archive_positions (
    stream      text PRIMARY KEY,
    last_id     text NOT NULL,              -- last stream entry archived
    entries     bigint NOT NULL DEFAULT 0,  -- entries archived so far
    messages    bigint NOT NULL DEFAULT 0,  -- messages archived so far (an entry carries several)
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE event_archive (
    stream    text NOT NULL,
    entry_id  text NOT NULL,
    idx       integer NOT NULL,             -- position of the message in its entry
    type      text NOT NULL,
    ts        bigint,                       -- event time, ns since the epoch
    payload   jsonb NOT NULL,
    PRIMARY KEY (stream, entry_id, idx)
);
CREATE INDEX event_archive_type_ts ON event_archive (type, ts);

CREATE TABLE orders (
    symbol           text NOT NULL,
    order_id         bigint NOT NULL,
    account_id       bigint NOT NULL,
    client_order_id  text NOT NULL,
    side             text NOT NULL,
    type             text NOT NULL,
    tif              text NOT NULL,
    price_ticks      bigint NOT NULL,
    qty_lots         bigint NOT NULL,
    quote_qty        numeric NOT NULL,
    status           text NOT NULL,
    reason           text,                  -- reject or expire reason
    filled_lots      bigint NOT NULL,
    filled_quote     numeric NOT NULL,
    created_ts       bigint NOT NULL,
    updated_ts       bigint NOT NULL,
    src_ms           bigint NOT NULL,       -- the user.events message this row reflects:
    src_seq          bigint NOT NULL,       -- (entry id ms, entry id seq, index), so an older
    src_idx          integer NOT NULL,      -- report never overwrites a newer one
    PRIMARY KEY (symbol, order_id)
);
CREATE INDEX orders_account ON orders (account_id, created_ts);

CREATE TABLE trades (
    symbol            text NOT NULL,
    trade_id          bigint NOT NULL,
    ts                bigint NOT NULL,
    price_ticks       bigint NOT NULL,
    qty_lots          bigint NOT NULL,
    quote_amount      numeric NOT NULL,
    taker_side        text NOT NULL,
    maker_order_id    bigint NOT NULL,
    maker_account_id  bigint NOT NULL,
    taker_order_id    bigint NOT NULL,
    taker_account_id  bigint NOT NULL,
    PRIMARY KEY (symbol, trade_id)
);
CREATE INDEX trades_ts ON trades (symbol, ts);

-- Every movement of every balance. Per (account_id, asset): sum(available_delta) = available and
-- sum(locked_delta) = locked. Causes: hold, release (available <-> locked), trade (the exchange of
-- base and quote), fee (paid by a trader), fee_income (to the fee account), deposit, withdrawal,
-- adjustment (a balance report no known movement explains: should never happen).
CREATE TABLE ledger (
    stream           text NOT NULL,
    entry_id         text NOT NULL,
    idx              integer NOT NULL,
    leg              smallint NOT NULL,     -- movements of one message
    ts               bigint NOT NULL,
    account_id       bigint NOT NULL,
    asset            text NOT NULL,
    available_delta  numeric NOT NULL,
    locked_delta     numeric NOT NULL,
    cause            text NOT NULL,
    symbol           text,
    order_id         bigint,
    trade_id         bigint,
    PRIMARY KEY (stream, entry_id, idx, leg)
);
CREATE INDEX ledger_account ON ledger (account_id, asset, ts);

-- Balances as the ledger sums them (kept by the persister in the same transaction).
CREATE TABLE balances (
    account_id  bigint NOT NULL,
    asset       text NOT NULL,
    available   numeric NOT NULL,
    locked      numeric NOT NULL,
    updated_ts  bigint NOT NULL,
    PRIMARY KEY (account_id, asset)
);

CREATE TABLE candles (
    symbol          text NOT NULL,
    interval        text NOT NULL,
    open_ts         bigint NOT NULL,
    close_ts        bigint NOT NULL,
    open_ticks      bigint NOT NULL,
    high_ticks      bigint NOT NULL,
    low_ticks       bigint NOT NULL,
    close_ticks     bigint NOT NULL,
    volume_lots     bigint NOT NULL,
    quote_volume    numeric NOT NULL,
    trades          bigint NOT NULL,
    first_trade_id  bigint NOT NULL,
    last_trade_id   bigint NOT NULL,
    closed          boolean NOT NULL,
    PRIMARY KEY (symbol, interval, open_ts)
);
