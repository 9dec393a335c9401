// Candles and volume with TradingView's lightweight-charts (vendored, v5 API).

import { CandlestickSeries, ColorType, HistogramSeries, createChart } from '../vendor/lightweight-charts.standalone.production.mjs';
import { pub } from './api.js';
import * as D from './decimal.js';

const UP = '#0ecb81';
const DOWN = '#f6465d';

export class Chart {
  constructor(el, legend) {
    this.legend = legend;
    this.chart = createChart(el, {
      autoSize: true,
      layout: { background: { type: ColorType.Solid, color: '#161a1e' }, textColor: '#848e9c',
                attributionLogo: true },
      grid: { vertLines: { color: '#1f242a' }, horzLines: { color: '#1f242a' } },
      timeScale: { timeVisible: true, secondsVisible: false, borderColor: '#2b3139', rightOffset: 6, barSpacing: 9 },
      rightPriceScale: { borderColor: '#2b3139' },
      crosshair: { mode: 0 },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: UP, downColor: DOWN, borderUpColor: UP, borderDownColor: DOWN, wickUpColor: UP, wickDownColor: DOWN,
    });
    this.volume = this.chart.addSeries(HistogramSeries, { priceFormat: { type: 'volume' }, priceScaleId: '',
                                                            lastValueVisible: false, priceLineVisible: false });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
    this.last = null;
    this.key = '';
  }

  configure(tickSize, decimals, qtyDecimals) {
    this.decimals = decimals;
    this.qtyDecimals = qtyDecimals;
    this.candles.applyOptions({ priceFormat: { type: 'price', precision: decimals, minMove: Number(tickSize) } });
  }

  /** Load history for `symbol` and `interval` from /api/v3/klines. */
  async load(symbol, interval) {
    const key = `${symbol}:${interval}`;
    this.key = key;
    const rows = await pub('/api/v3/klines', { symbol, interval, limit: 500 });
    if (this.key !== key) return;
    const bars = rows.map((r) => bar(r[0], r[1], r[2], r[3], r[4], r[5]));
    this.candles.setData(bars.map((b) => b.c));
    this.volume.setData(bars.map((b) => b.v));
    this.last = bars.length ? bars[bars.length - 1].raw : null;
    this._legend();
  }

  /** A kline stream event (`k` of Binance's kline payload). */
  update(k) {
    if (this.last && k.t < this.last.t) return;
    const b = bar(k.t, k.o, k.h, k.l, k.c, k.v);
    this.candles.update(b.c);
    this.volume.update(b.v);
    this.last = b.raw;
    this._legend();
  }

  _legend() {
    const l = this.last;
    const p = (x) => D.show(x, this.decimals ?? 8);
    const v = l ? D.show(l.v, this.qtyDecimals ?? 8) : '';
    this.legend.textContent = l ? `O ${p(l.o)}  H ${p(l.h)}  L ${p(l.l)}  C ${p(l.c)}  V ${v}` : 'no trades yet';
    this.legend.dataset.close = l ? p(l.c) : '';
    this.legend.dataset.volume = v;
    this.legend.dataset.time = l ? String(l.t) : '';
  }
}

function bar(t, o, h, l, c, v) {
  // Chart coordinates only (numbers are fine for drawing); the legend shows the exact strings.
  const time = Math.floor(t / 1000);
  const up = Number(c) >= Number(o);
  return {
    c: { time, open: Number(o), high: Number(h), low: Number(l), close: Number(c) },
    v: { time, value: Number(v), color: up ? 'rgba(14,203,129,.45)' : 'rgba(246,70,93,.45)' },
    raw: { t, o, h, l, c, v },
  };
}
