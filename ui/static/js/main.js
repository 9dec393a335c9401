// The trading screen: markets, chart, book, trades, order form, and the account's orders and balances.

import { ApiError, pub, user } from './api.js';
import { BookSync } from './book.js';
import { Chart } from './chart.js';
import * as D from './decimal.js';
import { $, dateTime, h, setMsg, time, toast } from './dom.js';
import { OrderForm } from './form.js';
import { Socket } from './socket.js';

const BOOK_LEVELS = 16;
const TAPE_ROWS = 40;
const OPEN = new Set(['NEW', 'PARTIALLY_FILLED']);

const state = {
  markets: new Map(), // symbol -> exchangeInfo entry + parsed filters
  tickers: new Map(), // symbol -> {last, change, high, low, volume}
  symbol: null,
  interval: '1m',
  me: null,
  balances: new Map(), // asset -> {free, locked}
  open: new Map(), // "SYMBOL:id" -> order
  history: new Map(), // orderId -> order (current symbol)
  fills: [], // current symbol, newest first
  trades: [], // tape, newest first
  feeRates: null,
};

let marketSocket = null;
let userSocket = null;
let book = null;
let listenKey = null;
let keepAlive = null;
const chart = new Chart($('chart'), $('chart-legend'));
const form = new OrderForm(state, { submit: placeOrder, bestPrices });

// ------------------------------------------------------------------ rendering (batched per frame)

const dirty = new Set();
let frame = 0;
// Time the page spends on its own work (bench/ui_load.py reads it): handling stream messages, and drawing.
const perf = { handleMs: 0, handled: 0, renderMs: 0, renders: 0 };
const klines = new Map(); // kline events since the last frame, by candle open time (the newest per candle)
function render(...parts) {
  for (const p of parts) dirty.add(p);
  if (!frame) frame = requestAnimationFrame(flush);
}
function flush() {
  const started = performance.now();
  frame = 0;
  const parts = [...dirty];
  dirty.clear();
  for (const p of parts) RENDER[p]();
  perf.renderMs += performance.now() - started;
  perf.renders += 1;
}

const RENDER = {
  chart() {
    const events = [...klines.values()].sort((a, b) => a.k.t - b.k.t);
    klines.clear();
    for (const d of events) if (d.s === state.symbol && d.k.i === state.interval) chart.update(d.k);
  },
  markets() {
    const nav = $('markets');
    nav.replaceChildren(...[...state.markets.keys()].map((s) => {
      const t = state.tickers.get(s) || {};
      const m = state.markets.get(s);
      const pct = t.change ?? '0';
      return h('button', { type: 'button', class: s === state.symbol ? 'on' : '', dataset: { symbol: s },
                           onclick: () => selectMarket(s) },
               h('b', {}, `${m.baseAsset}/${m.quoteAsset}`),
               h('span', { class: 'px' }, t.last ? D.show(t.last, m.priceDecimals) : '–'),
               h('span', { class: D.of(pct) < 0n ? 'down' : 'up' }, `${fmtPct(pct)}`));
    }));
    this.head();
  },
  head() {
    const m = state.markets.get(state.symbol);
    if (!m) return;
    const t = state.tickers.get(state.symbol) || {};
    $('head-symbol').textContent = `${m.baseAsset}/${m.quoteAsset}`;
    $('head-last').textContent = t.last ? D.pretty(D.show(t.last, m.priceDecimals)) : '–';
    const ch = $('head-change');
    ch.textContent = fmtPct(t.change ?? '0');
    ch.className = `change ${D.of(t.change ?? '0') < 0n ? 'down' : 'up'}`;
    $('spread-last').textContent = t.last ? D.show(t.last, m.priceDecimals) : '–';
    $('head-high').textContent = t.high ? D.show(t.high, m.priceDecimals) : '–';
    $('head-low').textContent = t.low ? D.show(t.low, m.priceDecimals) : '–';
    $('head-vol').textContent = t.volume ? D.show(t.volume, m.qtyDecimals) : '–';
    document.title = t.last ? `${D.show(t.last, m.priceDecimals)} ${m.baseAsset}/${m.quoteAsset} · exchange`
                            : 'exchange';
  },
  book() {
    const m = state.markets.get(state.symbol);
    if (!book || !m) return;
    const { bids, asks } = book.top(BOOK_LEVELS);
    const cum = (side) => {
      let sum = 0n;
      return side.map(([p, q]) => { sum += D.of(q); return [p, q, sum]; });
    };
    const cb = cum(bids);
    const ca = cum(asks);
    const max = [cb.at(-1)?.[2] ?? 0n, ca.at(-1)?.[2] ?? 0n].reduce((a, b) => (a > b ? a : b), 1n);
    fillLevels($('asks'), ca.slice().reverse(), 'ask', max, m);
    fillLevels($('bids'), cb, 'bid', max, m);
    if (bids.length && asks.length) {
      const spread = D.of(asks[0][0]) - D.of(bids[0][0]);
      $('spread-size').textContent = `spread ${D.format(spread, m.priceDecimals)}`;
    } else {
      $('spread-size').textContent = '';
    }
    form.refresh();
  },
  tape() {
    const m = state.markets.get(state.symbol);
    if (!m) return;
    $('tape').replaceChildren(...state.trades.slice(0, TAPE_ROWS).map((t) => h(
      'div', { class: `lvl ${t.m ? 's' : 'b'}`, dataset: { id: String(t.t) } },
      h('span', {}, D.show(t.p, m.priceDecimals)), h('span', {}, D.show(t.q, m.qtyDecimals)),
      h('span', {}, time(t.T)))));
  },
  orders() {
    const logged = Boolean(state.me);
    $('orders-empty').hidden = logged;
    const open = [...state.open.values()].sort((a, b) => b.time - a.time);
    $('open-count').textContent = open.length ? `(${open.length})` : '';
    $('cancel-all').hidden = !logged || !open.some((o) => o.symbol === state.symbol);
    $('open-orders').replaceChildren(...rowsOr(open.map((o) => {
      const m = state.markets.get(o.symbol);
      return h('tr', { dataset: { orderId: String(o.orderId), symbol: o.symbol } },
               h('td', {}, dateTime(o.time)), h('td', {}, o.symbol), h('td', { class: o.side }, o.side),
               h('td', {}, typeName(o)), h('td', {}, D.show(o.price, m.priceDecimals)),
               h('td', {}, D.show(o.origQty, m.qtyDecimals)), h('td', {}, D.show(o.executedQty, m.qtyDecimals)),
               h('td', {}, h('button', { type: 'button', class: 'cancel', onclick: () => cancelOrder(o) }, 'Cancel')));
    }), 8, 'No open orders.'));
    const hist = [...state.history.values()].sort((a, b) => b.orderId - a.orderId).slice(0, 200);
    $('order-history').replaceChildren(...rowsOr(hist.map((o) => {
      const m = state.markets.get(o.symbol);
      return h('tr', { dataset: { orderId: String(o.orderId) } },
               h('td', {}, dateTime(o.time)), h('td', {}, o.symbol), h('td', { class: o.side }, o.side),
               h('td', {}, typeName(o)), h('td', {}, o.type === 'MARKET' ? 'market' : D.show(o.price, m.priceDecimals)),
               h('td', {}, D.show(o.origQty, m.qtyDecimals)), h('td', {}, D.show(o.executedQty, m.qtyDecimals)),
               h('td', { class: 'status' }, o.status));
    }), 8, `No orders in ${state.symbol} yet.`));
    $('fills').replaceChildren(...rowsOr(state.fills.slice(0, 200).map((f) => {
      const m = state.markets.get(f.symbol);
      return h('tr', { dataset: { tradeId: String(f.id) } },
               h('td', {}, dateTime(f.time)), h('td', {}, f.symbol),
               h('td', { class: f.isBuyer ? 'BUY' : 'SELL' }, f.isBuyer ? 'BUY' : 'SELL'),
               h('td', {}, D.show(f.price, m.priceDecimals)), h('td', {}, D.show(f.qty, m.qtyDecimals)),
               h('td', {}, `${D.show(f.commission, m.quoteDecimals)} ${f.commissionAsset}`),
               h('td', {}, f.isMaker ? 'maker' : 'taker'));
    }), 7, `No fills in ${state.symbol} yet.`));
  },
  balances() {
    const rows = [...state.balances.entries()].sort(([a], [b]) => a.localeCompare(b));
    $('balances').replaceChildren(...rows.map(([asset, b]) => h(
      'tr', { dataset: { asset } }, h('td', {}, asset), h('td', { class: 'free' }, b.free),
      h('td', { class: 'locked' }, b.locked))));
    form.refresh();
  },
};

/** Show `levels` ([price, qty, cumulative]) in `box`, reusing its row elements (no churn at high update rates). */
function fillLevels(box, levels, side, max, m) {
  while (box.children.length > levels.length) box.lastChild.remove();
  while (box.children.length < levels.length) {
    const row = h('div', { class: 'lvl', dataset: { side } }, h('div', { class: 'bar' }), h('span'), h('span'),
                  h('span'));
    row.addEventListener('click', () => form.setPrice(row.dataset.price));
    box.append(row);
  }
  levels.forEach(([p, q, total], i) => {
    const row = box.children[i];
    const shown = D.show(p, m.priceDecimals);
    const width = `${Number((total * 1000n) / max) / 10}%`;
    if (row.dataset.price !== shown) {
      row.dataset.price = shown;
      row.children[1].textContent = shown;
    }
    const qty = D.show(q, m.qtyDecimals);
    if (row.children[2].textContent !== qty) row.children[2].textContent = qty;
    const cum = D.show(D.format(total, 18), m.qtyDecimals);
    if (row.children[3].textContent !== cum) row.children[3].textContent = cum;
    if (row.children[0].style.width !== width) row.children[0].style.width = width;
  });
}

/** A table's rows, or one row saying it is empty (when logged in). */
function rowsOr(rows, cols, text) {
  if (rows.length || !state.me) return rows;
  return [h('tr', { class: 'none' }, h('td', { colspan: String(cols), class: 'muted' }, text))];
}

function fmtPct(p) {
  const v = D.of(p);
  return `${v > 0n ? '+' : ''}${D.format(v, 2)}%`;
}

function typeName(o) {
  if (o.type === 'LIMIT_MAKER') return 'post-only';
  if (o.type === 'LIMIT') return o.timeInForce === 'GTC' ? 'limit' : `limit ${o.timeInForce}`;
  return o.type.toLowerCase();
}

// ------------------------------------------------------------------ connection state

function showConnection() {
  const states = [marketSocket?.state, state.me ? userSocket?.state : undefined].filter(Boolean);
  const el = $('conn');
  let s = 'connecting';
  let text = 'Connecting…';
  if (states.includes('reconnecting')) {
    s = 'reconnecting';
    const sock = [marketSocket, userSocket].find((k) => k?.state === 'reconnecting');
    const secs = Math.max(0, Math.ceil((sock.retryAt - Date.now()) / 1000));
    text = secs ? `Reconnecting in ${secs}s…` : 'Reconnecting…';
  } else if (states.length && states.every((x) => x === 'live') && book?.synced) {
    s = 'live';
    text = 'Live';
  } else if (states.every((x) => x === 'live')) {
    s = 'connecting';
    text = 'Syncing…';
  }
  el.dataset.state = s;
  $('conn-text').textContent = text;
}
setInterval(showConnection, 500);

// ------------------------------------------------------------------ market data

function streamsFor(symbol, interval) {
  const s = symbol.toLowerCase();
  return [`${s}@depth@100ms`, `${s}@trade`, `${s}@kline_${interval}`, '!ticker@arr'];
}

function onMarketMessage(msg) {
  const started = performance.now();
  handleMarketMessage(msg);
  perf.handleMs += performance.now() - started;
  perf.handled += 1;
}

function handleMarketMessage(msg) {
  if (!msg || !msg.stream) return;
  const d = msg.data;
  if (msg.stream === '!ticker@arr') {
    for (const t of d) {
      // a ticker older than a trade already shown must not roll the last price back
      const known = state.tickers.get(t.s);
      const fresh = !known || !known.tradeId || t.L >= known.tradeId;
      setTicker(t.s, { ...(fresh ? { last: t.c, tradeId: t.L } : {}), change: t.P, high: t.h, low: t.l,
                       volume: t.v });
    }
    render('markets');
    return;
  }
  if (!state.symbol || d.s !== state.symbol) return;
  if (d.e === 'depthUpdate') {
    book?.onEvent(d);
  } else if (d.e === 'trade') {
    state.trades.unshift(d);
    if (state.trades.length > TAPE_ROWS * 2) state.trades.length = TAPE_ROWS;
    const known = state.tickers.get(d.s);
    if (!known || !known.tradeId || d.t >= known.tradeId) setTicker(d.s, { last: d.p, tradeId: d.t });
    render('tape', 'markets', 'book');
  } else if (d.e === 'kline' && d.k.i === state.interval) {
    klines.set(d.k.t, d); // drawn once per frame: only the newest state of each candle matters
    render('chart');
  }
}

function setTicker(symbol, fields) {
  const t = state.tickers.get(symbol) || {};
  Object.assign(t, fields);
  if (t.last !== undefined && D.of(t.last) === 0n) t.last = null; // no trade yet
  state.tickers.set(symbol, t);
}

/** After every (re)connect of the market stream: book snapshot, candles, trades and tickers again. */
async function resyncMarket() {
  const symbol = state.symbol;
  book.resync();
  const jobs = [
    chart.load(symbol, state.interval),
    pub('/api/v3/trades', { symbol, limit: TAPE_ROWS }).then((rows) => {
      if (symbol !== state.symbol) return;
      state.trades = rows.reverse().map((r) => ({ t: r.id, p: r.price, q: r.qty, T: r.time, m: r.isBuyerMaker }));
      render('tape');
    }),
    pub('/api/v3/ticker/24hr').then((rows) => {
      for (const t of rows) {
        const known = state.tickers.get(t.symbol);
        const fresh = !known || !known.tradeId || t.lastId >= known.tradeId;
        setTicker(t.symbol, { ...(fresh ? { last: t.lastPrice, tradeId: t.lastId } : {}),
                              change: t.priceChangePercent, high: t.highPrice, low: t.lowPrice, volume: t.volume });
      }
      render('markets');
    }),
  ];
  if (state.me) jobs.push(refreshAccount());
  const failed = (await Promise.allSettled(jobs)).filter((r) => r.status === 'rejected');
  if (failed.length) toast(`Could not reload everything: ${failed[0].reason.text || failed[0].reason}`);
}

function selectMarket(symbol) {
  if (symbol === state.symbol && marketSocket) return;
  state.symbol = symbol;
  const m = state.markets.get(symbol);
  localStorage.setItem('symbol', symbol);
  chart.configure(m.tickSize, m.priceDecimals, m.qtyDecimals);
  marketSocket?.stop();
  book?.stop();
  book = new BookSync(symbol, () => render('book'), (s) => { $('book-state').textContent = s; showConnection(); });
  state.trades = [];
  state.history.clear();
  state.fills = [];
  form.setMarket(m);
  marketSocket = new Socket(() => `/stream?streams=${streamsFor(symbol, state.interval).join('/')}`, {
    onMessage: onMarketMessage, onOpen: resyncMarket, onState: showConnection,
  });
  marketSocket.start();
  window.exchangeUi.book = book;
  render('markets', 'book', 'tape', 'orders');
  requestAnimationFrame(() => {
    const on = document.querySelector('#markets button.on');
    const nav = $('markets');
    if (on) nav.scrollLeft = on.offsetLeft - (nav.clientWidth - on.clientWidth) / 2;
  });
}

function selectInterval(interval) {
  if (interval === state.interval) return;
  const old = `${state.symbol.toLowerCase()}@kline_${state.interval}`;
  state.interval = interval;
  for (const b of $('intervals').children) b.classList.toggle('on', b.dataset.interval === interval);
  marketSocket.send({ method: 'UNSUBSCRIBE', params: [old], id: Date.now() });
  marketSocket.send({ method: 'SUBSCRIBE', params: [`${state.symbol.toLowerCase()}@kline_${interval}`],
                      id: Date.now() + 1 });
  chart.load(state.symbol, interval).catch((e) => toast(`Could not load candles: ${e.text || e}`));
}

function bestPrices() {
  if (!book?.synced) return { bid: null, ask: null };
  const { bids, asks } = book.top(1);
  return { bid: bids[0]?.[0] ?? null, ask: asks[0]?.[0] ?? null };
}

// ------------------------------------------------------------------ account

function orderFromReport(e) {
  return { symbol: e.s, orderId: e.i, clientOrderId: e.c, price: e.p, origQty: e.q, executedQty: e.z,
           status: e.X, timeInForce: e.f, type: e.o, side: e.S, time: e.O, updateTime: e.T };
}

function onUserMessage(e) {
  if (e.e === 'executionReport') {
    const o = orderFromReport(e);
    const key = `${o.symbol}:${o.orderId}`;
    if (OPEN.has(o.status)) state.open.set(key, o); else state.open.delete(key);
    if (o.symbol === state.symbol) {
      state.history.set(o.orderId, o);
      if (e.x === 'TRADE') {
        state.fills.unshift({ symbol: e.s, id: e.t, orderId: e.i, price: e.L, qty: e.l, commission: e.n,
                              commissionAsset: e.N, time: e.T, isBuyer: e.S === 'BUY', isMaker: e.m });
      }
    }
    render('orders');
  } else if (e.e === 'outboundAccountPosition') {
    for (const b of e.B) state.balances.set(b.a, { free: b.f, locked: b.l });
    render('balances');
  } else if (e.e === 'balanceUpdate') {
    refreshAccount().catch(() => {});
  }
}

async function refreshAccount() {
  const symbol = state.symbol;
  const [acct, open, all, fills] = await Promise.all([
    user('GET', '/api/v3/account'), user('GET', '/api/v3/openOrders'),
    user('GET', '/api/v3/allOrders', { symbol, limit: 200 }), user('GET', '/api/v3/myTrades', { symbol, limit: 200 }),
  ]);
  state.balances = new Map(acct.balances.map((b) => [b.asset, { free: b.free, locked: b.locked }]));
  state.feeRates = acct.commissionRates;
  state.open = new Map(open.map((o) => [`${o.symbol}:${o.orderId}`, o]));
  if (symbol === state.symbol) {
    state.history = new Map(all.map((o) => [o.orderId, o]));
    state.fills = fills.reverse().map((f) => ({ ...f, symbol }));
  }
  render('balances', 'orders');
}

async function userStreamUrl() {
  try {
    listenKey = (await user('POST', '/api/v3/userDataStream')).listenKey;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) loggedOut('Your session ended; please log in again.');
    throw err;
  }
  return `/ws/${listenKey}`;
}

function loggedIn(me) {
  state.me = me;
  $('user-name').textContent = me.username;
  $('user-name').hidden = false;
  $('logout').hidden = false;
  $('show-login').hidden = true;
  $('auth').hidden = true;
  $('order-form').hidden = false;
  userSocket?.stop();
  userSocket = new Socket(userStreamUrl, {
    onMessage: onUserMessage,
    onOpen: () => refreshAccount().catch((e) => toast(`Could not load your account: ${e.text || e}`)),
    onState: showConnection,
  });
  userSocket.start();
  clearInterval(keepAlive);
  keepAlive = setInterval(() => {
    if (listenKey) user('PUT', '/api/v3/userDataStream', { listenKey }).catch(() => {});
  }, 30 * 60 * 1000);
  render('orders', 'balances');
}

function loggedOut(message = '') {
  state.me = null;
  userSocket?.stop();
  userSocket = null;
  clearInterval(keepAlive);
  listenKey = null;
  state.balances.clear();
  state.open.clear();
  state.history.clear();
  state.fills = [];
  $('user-name').hidden = true;
  $('logout').hidden = true;
  $('show-login').hidden = false;
  $('auth').hidden = false;
  $('order-form').hidden = true;
  setMsg($('auth-msg'), message);
  render('orders', 'balances');
  showConnection();
}

async function authenticate(path) {
  const username = $('auth-user').value.trim();
  const password = $('auth-pass').value;
  const msg = $('auth-msg');
  if (!username || password.length < 8) {
    setMsg(msg, 'Enter a username and a password of at least 8 characters.');
    return;
  }
  for (const b of [$('login'), $('signup')]) b.disabled = true;
  setMsg(msg, path.endsWith('signup') ? 'Creating your account…' : 'Logging in…', 'ok');
  try {
    const me = await user('POST', path, { username, password });
    $('auth-pass').value = '';
    setMsg(msg, '');
    loggedIn(me);
  } catch (err) {
    setMsg(msg, err.text || String(err));
  } finally {
    for (const b of [$('login'), $('signup')]) b.disabled = false;
  }
}

// ------------------------------------------------------------------ orders

async function placeOrder(params) {
  const r = await user('POST', '/api/v3/order', { ...params, newOrderRespType: 'RESULT' });
  const key = `${r.symbol}:${r.orderId}`;
  const o = { ...r, time: r.transactTime };
  if (OPEN.has(r.status)) state.open.set(key, o); else state.open.delete(key);
  if (r.symbol === state.symbol) state.history.set(r.orderId, { ...(state.history.get(r.orderId) || {}), ...o });
  render('orders');
  return r;
}

async function cancelOrder(o) {
  try {
    await user('DELETE', '/api/v3/order', { symbol: o.symbol, orderId: o.orderId });
    state.open.delete(`${o.symbol}:${o.orderId}`);
    render('orders');
  } catch (err) {
    toast(`Cancel failed: ${err.text || err}`);
  }
}

async function cancelAll() {
  try {
    await user('DELETE', '/api/v3/openOrders', { symbol: state.symbol });
    for (const [k, o] of state.open) if (o.symbol === state.symbol) state.open.delete(k);
    render('orders');
  } catch (err) {
    toast(`Cancel all failed: ${err.text || err}`);
  }
}

// ------------------------------------------------------------------ start

function wire() {
  $('auth-form').addEventListener('submit', (ev) => { ev.preventDefault(); authenticate('/api/x/login'); });
  $('signup').addEventListener('click', () => authenticate('/api/x/signup'));
  $('show-login').addEventListener('click', () => { $('auth').scrollIntoView({ block: 'center' }); $('auth-user').focus(); });
  $('logout').addEventListener('click', async () => {
    try {
      await user('POST', '/api/x/logout');
    } catch (err) {
      toast(`Log out failed: ${err.text || err}`);
      return;
    }
    loggedOut();
  });
  $('cancel-all').addEventListener('click', cancelAll);
  for (const b of $('intervals').children) b.addEventListener('click', () => selectInterval(b.dataset.interval));
  for (const b of document.querySelectorAll('.tabs [data-tab]')) {
    b.addEventListener('click', () => {
      for (const o of document.querySelectorAll('.tabs [data-tab]')) o.classList.toggle('on', o === b);
      for (const t of document.querySelectorAll('.orders-panel .tab')) t.hidden = t.id !== `tab-${b.dataset.tab}`;
    });
  }
}

async function start() {
  window.exchangeUi = { state, book: null, chart, perf, market: () => marketSocket }; // tests, bench/ui_load.py
  wire();
  let info;
  for (let attempt = 0; ; attempt++) {
    try {
      info = await pub('/api/v3/exchangeInfo');
      break;
    } catch (err) {
      $('conn').dataset.state = 'reconnecting';
      $('conn-text').textContent = 'Cannot reach the exchange; retrying…';
      await new Promise((r) => setTimeout(r, Math.min(10000, 500 * 2 ** attempt)));
    }
  }
  for (const s of info.symbols) {
    const f = Object.fromEntries(s.filters.map((x) => [x.filterType, x]));
    state.markets.set(s.symbol, {
      symbol: s.symbol, baseAsset: s.baseAsset, quoteAsset: s.quoteAsset, status: s.status,
      tickSize: f.PRICE_FILTER.tickSize, minPrice: f.PRICE_FILTER.minPrice, maxPrice: f.PRICE_FILTER.maxPrice,
      stepSize: f.LOT_SIZE.stepSize, minQty: f.LOT_SIZE.minQty, maxQty: f.LOT_SIZE.maxQty,
      minNotional: (f.NOTIONAL || f.MIN_NOTIONAL || {}).minNotional || '0',
      priceDecimals: D.decimalsOf(f.PRICE_FILTER.tickSize), qtyDecimals: D.decimalsOf(f.LOT_SIZE.stepSize),
      quoteDecimals: s.quoteAssetPrecision, maker: s.makerCommission, taker: s.takerCommission,
    });
  }
  const saved = new URLSearchParams(location.search).get('symbol') || localStorage.getItem('symbol');
  const fallback = state.markets.has('BTCUSDT') ? 'BTCUSDT' : state.markets.keys().next().value;
  selectMarket(state.markets.has(saved) ? saved : fallback);
  try {
    loggedIn(await user('GET', '/api/x/me'));
  } catch (err) {
    loggedOut();
  }
}

start();
