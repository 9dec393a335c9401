// A local order book kept in sync the way Binance documents it:
// 1. open the <symbol>@depth stream and buffer its events;
// 2. fetch the REST snapshot (/api/v3/depth) and its lastUpdateId;
// 3. drop buffered events with u <= lastUpdateId; the first one kept must have U <= lastUpdateId + 1 <= u
//    (else fetch the snapshot again);
// 4. from then on each event's U must be the previous event's u + 1; a gap means resync (back to 2).

import { pub } from './api.js';
import * as D from './decimal.js';

export class BookSync {
  constructor(symbol, onChange, onState = () => {}) {
    this.symbol = symbol;
    this.onChange = onChange;
    this.onState = onState;
    this.bids = new Map();
    this.asks = new Map();
    this.lastId = 0;
    this.synced = false;
    this.buffer = [];
    this.generation = 0;
    this.resyncs = 0;
    this.prices = new Map();
  }

  /** Forget everything and start again from a new snapshot (the stream must already be buffering). */
  resync() {
    this.synced = false;
    this.buffer = [];
    this.generation += 1;
    this.onState('syncing');
    this._snapshot(this.generation);
  }

  stop() {
    this.generation += 1;
  }

  onEvent(ev) {
    if (!this.synced) {
      this.buffer.push(ev);
      if (this.buffer.length > 5000) this.buffer.shift();
      return;
    }
    this._apply(ev);
  }

  async _snapshot(gen) {
    let snap;
    for (let attempt = 0; ; attempt++) {
      if (gen !== this.generation) return;
      try {
        snap = await pub('/api/v3/depth', { symbol: this.symbol, limit: 1000 });
        break;
      } catch (err) {
        await new Promise((r) => setTimeout(r, Math.min(5000, 300 * 2 ** attempt)));
      }
    }
    if (gen !== this.generation) return;
    const first = this.buffer.find((e) => e.u > snap.lastUpdateId);
    if (first && first.U > snap.lastUpdateId + 1) {
      // the snapshot is older than what the stream already moved past: fetch it again
      setTimeout(() => this._snapshot(gen), 50);
      return;
    }
    this.bids = new Map(snap.bids.map(([p, q]) => [p, q]));
    this.asks = new Map(snap.asks.map(([p, q]) => [p, q]));
    this.lastId = snap.lastUpdateId;
    this.synced = true;
    const pending = this.buffer;
    this.buffer = [];
    this.onState('live');
    for (const ev of pending) {
      if (!this.synced) return;
      this._apply(ev);
    }
    this.onChange(this);
  }

  _apply(ev) {
    if (ev.u <= this.lastId) return; // already in the snapshot
    if (ev.U > this.lastId + 1) {
      this.resyncs += 1;
      this.resync(); // a gap: some diff was lost
      this.buffer.push(ev);
      return;
    }
    for (const [p, q] of ev.b) if (D.of(q) === 0n) this.bids.delete(p); else this.bids.set(p, q);
    for (const [p, q] of ev.a) if (D.of(q) === 0n) this.asks.delete(p); else this.asks.set(p, q);
    this.lastId = ev.u;
    this.onChange(this);
  }

  /** The scaled value of a price string (parsed once per price). */
  num(p) {
    let v = this.prices.get(p);
    if (v === undefined) {
      if (this.prices.size > 20000) this.prices.clear();
      v = D.of(p);
      this.prices.set(p, v);
    }
    return v;
  }

  /** The best `n` levels per side, as [price, qty] strings, best first. One pass over the side keeping
   *  the best `n` in order (drawn every frame under load: no sort of the whole book). */
  top(n) {
    const pick = (m, desc) => {
      const out = [];
      if (n <= 0) return out;
      const better = (a, b) => (desc ? a > b : a < b);
      for (const [p, q] of m) {
        const v = this.num(p);
        if (out.length === n && !better(v, out[n - 1][2])) continue;
        let i = out.length === n ? n - 1 : out.length;
        out[i] = [p, q, v];
        while (i > 0 && better(out[i][2], out[i - 1][2])) {
          [out[i], out[i - 1]] = [out[i - 1], out[i]];
          i -= 1;
        }
      }
      return out;
    };
    return { bids: pick(this.bids, true), asks: pick(this.asks, false) };
  }
}
