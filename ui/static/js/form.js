// The buy/sell form: limit, market, post-only, IOC/FOK; shows cost, fee and what is available, and checks the
// market's filters (PRICE_FILTER, LOT_SIZE, NOTIONAL) and the balance before anything is sent.

import * as D from './decimal.js';
import { $, setMsg } from './dom.js';

export class OrderForm {
  constructor(state, { submit, bestPrices }) {
    this.state = state;
    this.submitOrder = submit;
    this.bestPrices = bestPrices;
    this.side = 'BUY';
    this.market = null;
    this.busy = false;
    $('side-buy').addEventListener('click', () => this.setSide('BUY'));
    $('side-sell').addEventListener('click', () => this.setSide('SELL'));
    for (const id of ['type', 'tif', 'price', 'qty']) $(id).addEventListener('input', () => this.refresh(true));
    $('type').addEventListener('change', () => this.refresh(true));
    for (const b of $('pcts').children) b.addEventListener('click', () => this.fillPct(BigInt(b.dataset.pct)));
    $('order-form').addEventListener('submit', (ev) => { ev.preventDefault(); this.send(); });
  }

  setMarket(m) {
    this.market = m;
    $('price').value = '';
    $('qty').value = '';
    $('price').placeholder = D.format(0n, m.priceDecimals);
    $('qty').placeholder = D.format(0n, m.qtyDecimals);
    $('price-unit').textContent = m.quoteAsset;
    $('qty-unit').textContent = m.baseAsset;
    setMsg($('form-msg'), '');
    this.refresh();
  }

  setSide(side) {
    this.side = side;
    $('side-buy').classList.toggle('on', side === 'BUY');
    $('side-sell').classList.toggle('on', side === 'SELL');
    this.refresh(true);
  }

  setPrice(p) {
    if (!this.market) return;
    $('price').value = D.show(p, this.market.priceDecimals);
    if ($('type').value === 'MARKET') $('type').value = 'LIMIT';
    this.refresh(true);
  }

  available() {
    const m = this.market;
    const asset = this.side === 'BUY' ? m.quoteAsset : m.baseAsset;
    const b = this.state.balances.get(asset);
    return { asset, free: b ? D.of(b.free) : 0n };
  }

  feeRate() {
    const type = $('type').value;
    const m = this.market;
    return D.of(type === 'LIMIT_MAKER' ? m.maker : m.taker);
  }

  /** What the order would be: {price, qty, cost, fee, estimated} as scaled BigInts (nulls when unknown). */
  figures() {
    const m = this.market;
    const type = $('type').value;
    const qty = D.parse($('qty').value);
    let price = D.parse($('price').value);
    let estimated = false;
    if (type === 'MARKET') {
      const best = this.bestPrices();
      const p = this.side === 'BUY' ? best.ask : best.bid;
      price = p ? D.of(p) : null;
      estimated = true;
    }
    const cost = price !== null && qty !== null ? D.mul(price, qty) : null;
    const fee = cost !== null ? D.mul(cost, this.feeRate()) : null;
    return { m, type, price, qty, cost, fee, estimated };
  }

  refresh(userEdit = false) {
    const m = this.market;
    if (!m) return;
    const type = $('type').value;
    $('tif-label').hidden = type !== 'LIMIT';
    $('price-label').hidden = type === 'MARKET';
    const sub = $('submit');
    sub.className = `primary ${this.side === 'BUY' ? 'buy' : 'sell'}`;
    sub.textContent = `${this.side === 'BUY' ? 'Buy' : 'Sell'} ${m.baseAsset}`;
    const { asset, free } = this.available();
    $('f-avail').textContent = `${D.format(free, asset === m.quoteAsset ? m.quoteDecimals : 8)} ${asset}`;
    const f = this.figures();
    const q = m.quoteDecimals;
    const approx = f.estimated ? '≈ ' : '';
    $('f-cost').textContent = f.cost !== null ? `${approx}${D.format(f.cost, q)} ${m.quoteAsset}` : '–';
    $('f-fee').textContent = f.fee !== null ? `${approx}${D.format(f.fee, q)} ${m.quoteAsset}` : '–';
    $('f-total-label').textContent = this.side === 'BUY' ? 'Total (held)' : 'You receive';
    if (f.cost !== null) {
      const total = this.side === 'BUY' ? f.cost + f.fee : f.cost - f.fee;
      $('f-total').textContent = `${approx}${D.format(total, q)} ${m.quoteAsset}`;
    } else {
      $('f-total').textContent = '–';
    }
    if (userEdit && $('form-msg').dataset.kind === 'error') setMsg($('form-msg'), '');
  }

  fillPct(pct) {
    const m = this.market;
    const { free } = this.available();
    const step = D.of(m.stepSize);
    let qty;
    if (this.side === 'SELL') {
      qty = (free * pct) / 100n;
    } else {
      const f = this.figures();
      if (f.price === null || f.price === 0n) {
        setMsg($('form-msg'), 'Enter a price first.');
        return;
      }
      const budget = (free * pct) / 100n;
      qty = D.div(budget, D.mul(f.price, D.of('1') + this.feeRate()));
    }
    $('qty').value = D.format(D.floorTo(qty, step), m.qtyDecimals);
    this.refresh(true);
  }

  /** The first problem with the order as entered, or null if it passes the market's filters. */
  check() {
    const f = this.figures();
    const m = f.m;
    const rng = (v, lo, hi, name, unit, step) => {
      if (v === null) return `Enter ${name === 'Price' ? 'a price' : 'an amount'}.`;
      if (v < D.of(lo)) return `${name} must be at least ${D.show(lo, unit)}.`;
      if (v > D.of(hi)) return `${name} must be at most ${D.show(hi, unit)}.`;
      if (!D.isMultiple(v, D.of(step))) return `${name} must be a multiple of ${D.show(step, unit)}.`;
      return null;
    };
    if (f.type !== 'MARKET') {
      const p = rng(f.price, m.minPrice, m.maxPrice, 'Price', m.priceDecimals, m.tickSize);
      if (p) return p;
    }
    const q = rng(f.qty, m.minQty, m.maxQty, 'Amount', m.qtyDecimals, m.stepSize);
    if (q) return q;
    if (f.cost !== null && f.cost < D.of(m.minNotional)) {
      return `Order value must be at least ${D.show(m.minNotional, m.quoteDecimals)} ${m.quoteAsset} ` +
             `(this is ${D.format(f.cost, m.quoteDecimals)}).`;
    }
    if (f.type === 'MARKET' && f.price === null) return 'There is no one to trade with on that side of the book.';
    const { asset, free } = this.available();
    const need = this.side === 'BUY' ? (f.cost ?? 0n) + (f.fee ?? 0n) : f.qty;
    if (need > free) {
      const places = asset === m.quoteAsset ? m.quoteDecimals : m.qtyDecimals;
      return `Not enough ${asset}: this order needs ${D.format(need, places)}, you have ${D.format(free, places)}.`;
    }
    return null;
  }

  async send() {
    if (this.busy) return;
    const msg = $('form-msg');
    const problem = this.check();
    if (problem) {
      setMsg(msg, problem);
      return;
    }
    const m = this.market;
    const type = $('type').value;
    const params = { symbol: m.symbol, side: this.side, type, quantity: $('qty').value.trim() };
    if (type !== 'MARKET') params.price = $('price').value.trim();
    if (type === 'LIMIT') params.timeInForce = $('tif').value;
    this.busy = true;
    $('submit').disabled = true;
    setMsg(msg, 'Sending…', 'ok');
    try {
      const r = await this.submitOrder(params);
      const filled = D.show(r.executedQty, m.qtyDecimals);
      const words = { NEW: 'placed', PARTIALLY_FILLED: 'partially filled', FILLED: 'filled', EXPIRED: 'expired',
                      CANCELED: 'canceled', REJECTED: 'rejected' };
      setMsg(msg, `Order ${r.orderId} ${words[r.status] || r.status}` +
                  (D.of(r.executedQty) > 0n ? ` (filled ${filled} ${m.baseAsset})` : '') + '.',
             r.status === 'EXPIRED' || r.status === 'REJECTED' ? 'error' : 'ok');
    } catch (err) {
      setMsg(msg, `Rejected: ${err.text || err}`);
    } finally {
      this.busy = false;
      $('submit').disabled = false;
    }
  }
}
