// A WebSocket that reconnects with exponential backoff (plus jitter) and reports its state.
// States: "connecting" (first attempt), "live", "reconnecting" (waiting or retrying), "closed" (stopped).

export class Socket {
  /**
   * @param {() => string|Promise<string>} url   where to connect (asked again before each attempt)
   * @param {{onMessage: Function, onOpen?: Function, onState?: Function}} handlers
   */
  constructor(url, { onMessage, onOpen = () => {}, onState = () => {} }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onOpen = onOpen;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.state = 'closed';
    this.retryAt = 0;
    this.closes = []; // [code, reason] of every close the server or network caused (shown by the load bench)
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this._set('connecting');
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this._set('closed');
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  _set(state) {
    this.state = state;
    this.onState(state, this);
  }

  async _connect() {
    if (this.stopped) return;
    let target;
    try {
      target = await this.url();
    } catch (err) {
      this._retry();
      return;
    }
    if (this.stopped) return;
    const abs = new URL(target, window.location.href);
    abs.protocol = abs.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(abs.href);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this._set('live');
      this.onOpen(this);
    };
    ws.onmessage = (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.onMessage(data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      if (!this.stopped) this.closes.push([ev.code, ev.reason]);
      if (!this.stopped) this._retry();
    };
    ws.onerror = () => {}; // onclose follows
  }

  _retry() {
    const base = Math.min(5000, 250 * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this._set('reconnecting');
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._connect(), delay);
  }
}
