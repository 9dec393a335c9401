"""Does the trading screen keep up under load? Frames and update lag in headless Chromium, idle vs loaded.

    .venv/bin/python -m bench.ui_load [--rate 2000] [--idle 15] [--duration 30] [--base-url URL]

Without `--base-url` it starts `exchange up` (with the market maker) on a free port in a
temporary data dir, and stops it at the end. It opens the UI in Debian's Chromium
(/usr/bin/chromium) and measures, in the page:

- frames: the intervals between `requestAnimationFrame` callbacks (60 Hz is 16.7 ms; long
  intervals are visible jank), and the browser's long tasks (> 50 ms of main-thread work);
- update lag: for every market stream event, the page's clock when it was handled minus the
  event time `E` the server stamped (same machine, same clock);
- page delay: from a message's arrival in the page to the next animation frame, where the
  page draws what changed (the page batches its rendering per frame), i.e. the part of the
  lag that is the page's own;
- the page's own work: main.js's counters of the time spent handling stream messages and
  drawing frames (share of the main thread, and per message / per frame);
- at the end: whether the page's book is still in sync (its last update id against the REST
  snapshot, and how many gap resyncs it needed).

First for `--idle` seconds with only the market maker running (the baseline of the same run),
then while `exchange bench --via http --rate R` offers load from a separate process; the table
gives both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXCHANGE = str(Path(sys.executable).parent / "exchange")

PROBE = """
(() => {
  const m = window.__probe = { frames: [], lags: [], longTasks: [], events: 0, on: false, arrivals: [], page: [] };
  let last = 0;
  const tick = (t) => {
    if (m.on && last) m.frames.push(t - last);
    last = t;
    const now = performance.now();
    if (m.on) for (const a of m.arrivals) m.page.push(now - a);
    m.arrivals.length = 0;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  try {
    new PerformanceObserver((list) => { if (m.on) for (const e of list.getEntries()) m.longTasks.push(e.duration); })
      .observe({ type: 'longtask', buffered: false });
  } catch (e) {}
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...a) {
      super(...a);
      this.addEventListener('message', (ev) => {
        if (!m.on) return;
        m.arrivals.push(performance.now());
        const now = Date.now();
        let d;
        try { d = JSON.parse(ev.data); } catch (e) { return; }
        const data = d && d.data !== undefined ? d.data : d;
        const list = Array.isArray(data) ? data : [data];
        for (const x of list) if (x && typeof x.E === 'number') { m.lags.push(now - x.E); m.events++; }
      });
    }
  };
})();
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


PERF = ("() => ({...(window.exchangeUi && window.exchangeUi.perf || {}), "
        "closes: window.exchangeUi && window.exchangeUi.market() ? window.exchangeUi.market().closes.length : 0})")
"""The page's own counters (main.js): time handling stream messages and drawing frames."""


def measure(page: Page, seconds: float) -> dict[str, Any]:
    before = page.evaluate(PERF)
    page.evaluate("() => { const m = window.__probe; m.frames = []; m.lags = []; m.longTasks = []; m.events = 0; "
                  "m.page = []; m.arrivals = []; m.on = true; }")
    time.sleep(seconds)
    raw = page.evaluate("() => { const m = window.__probe; m.on = false; "
                        "return {frames: m.frames, lags: m.lags, longTasks: m.longTasks, events: m.events, "
                        "page: m.page}; }")
    frames, lags, long_tasks, delays = raw["frames"], raw["lags"], raw["longTasks"], raw["page"]
    after = page.evaluate(PERF)
    work = {k: after.get(k, 0) - before.get(k, 0) for k in ("handleMs", "handled", "renderMs", "renders", "closes")}
    return {"fps": len(frames) / seconds, "frame_p50": pct(frames, 50), "frame_p99": pct(frames, 99),
            "frame_max": max(frames, default=float("nan")), "janky": sum(1 for f in frames if f > 50),
            "long_tasks": len(long_tasks), "long_ms": sum(long_tasks), "events": raw["events"] / seconds,
            "lag_p50": pct(lags, 50), "lag_p99": pct(lags, 99), "lag_max": max(lags, default=float("nan")),
            "page_p50": pct(delays, 50), "page_p99": pct(delays, 99), "page_max": max(delays, default=float("nan")),
            "work_pct": (work["handleMs"] + work["renderMs"]) / seconds / 10,
            "handle_ms": work["handleMs"] / max(1, work["handled"]),
            "render_ms": work["renderMs"] / max(1, work["renders"]), "reconnects": work["closes"]}


def book_sync(page: Page, base_url: str, symbol: str) -> str:
    """The page's book against the REST snapshot: update ids, and whether the top 20 levels are equal."""
    server = httpx.get(f"{base_url}/api/v3/depth", params={"symbol": symbol, "limit": 20}, timeout=30).json()
    state = page.evaluate("() => { const b = window.exchangeUi.book; const t = b.top(20); return {id: b.lastId, "
                          "synced: b.synced, resyncs: b.resyncs, bids: t.bids.map(l => [l[0], l[1]]), "
                          "asks: t.asks.map(l => [l[0], l[1]]), closes: window.exchangeUi.market().closes}; }")
    same = state["bids"] == server["bids"] and state["asks"] == server["asks"]
    return (f"page lastUpdateId {state['id']} vs REST {server['lastUpdateId']} "
            f"(behind by {server['lastUpdateId'] - state['id']}), top 20 levels equal: {same}, "
            f"synced={state['synced']}, gap resyncs={state['resyncs']}, "
            f"market stream closes so far (code, reason): {state['closes'] or 'none'}")


def _drain(stream: Any) -> None:
    """Read the exchange's output to the end, so a full pipe never blocks it."""
    for _ in stream:
        pass


def start_exchange(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "EXCHANGE_DATA_DIR": str(data_dir), "EXCHANGE_API_WEIGHT_PER_MINUTE": "0"}
    process = subprocess.Popen([EXCHANGE, "up", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        print(f"  [up] {line.rstrip()}", file=sys.stderr)
        if line.startswith("exchange is up"):
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process
    raise SystemExit("exchange up did not start")


def stop_exchange(process: subprocess.Popen[str], data_dir: Path, timeout: float = 300.0) -> None:
    """SIGINT (a clean stop: with a backlog the agents finish their batches and snapshot first, which
    can take minutes on a loaded box); if it is still running after `timeout`, kill it and stop its
    embedded servers so nothing is left behind."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"exchange up did not stop within {timeout:.0f} s: killed", file=sys.stderr)
        process.kill()
        process.wait()
        subprocess.run([EXCHANGE, "services", "down"], env={**os.environ, "EXCHANGE_DATA_DIR": str(data_dir)},
                       capture_output=True, timeout=120, check=False)


def print_result(args: argparse.Namespace, idle: dict[str, Any], loaded: dict[str, Any], sync: str,
                 output: str) -> None:
    """The table (markdown), the book check and the load generator's summary; JSON with --out."""
    summary = re.findall(r"(?m)^(?:offered_per_s|acked_per_s|trades_per_s|pipeline_lag_at_end|ack  ).*$", output)
    rows = [("frames per second", "fps", "{:.1f}"), ("frame interval p50 (ms)", "frame_p50", "{:.1f}"),
            ("frame interval p99 (ms)", "frame_p99", "{:.1f}"), ("frame interval max (ms)", "frame_max", "{:.0f}"),
            ("frames > 50 ms", "janky", "{:d}"), ("long tasks (> 50 ms)", "long_tasks", "{:d}"),
            ("long-task time (ms)", "long_ms", "{:.0f}"), ("stream events handled per s", "events", "{:.0f}"),
            ("update lag p50 (ms)", "lag_p50", "{:.0f}"), ("update lag p99 (ms)", "lag_p99", "{:.0f}"),
            ("update lag max (ms)", "lag_max", "{:.0f}"), ("page delay p50 (ms)", "page_p50", "{:.1f}"),
            ("page delay p99 (ms)", "page_p99", "{:.1f}"), ("page delay max (ms)", "page_max", "{:.0f}"),
            ("page's own work (% of main thread)", "work_pct", "{:.1f}"),
            ("handling one message (ms, mean)", "handle_ms", "{:.3f}"),
            ("drawing one frame (ms, mean)", "render_ms", "{:.2f}"),
            ("market stream closed by the server or network", "reconnects", "{:d}")]
    print(f"\nUI under load: {args.symbol} page at 1440x900, {args.rate:.0f} orders/s offered (`exchange bench "
          f"--via {args.via}`)\n")
    print("| measure | idle (market maker only) | under load | load / idle |\n|---|---|---|---|")
    for label, key, fmt in rows:
        a, b = idle[key], loaded[key]
        ratio = f"{b / a:.2f}x" if isinstance(a, int | float) and a and a == a and b == b else "-"
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
    print(f"\nbook {sync}")
    print("load generator's summary (`exchange bench`):\n  " + "\n  ".join(summary or output.strip().splitlines()[-8:]))
    if args.out:
        Path(args.out).write_text(json.dumps({"idle": idle, "load": loaded, "sync": sync, "bench": output}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="a running exchange (with its market maker); default: start one")
    parser.add_argument("--data-dir", help="its EXCHANGE_DATA_DIR (for `exchange bench` to create accounts)")
    parser.add_argument("--port", type=int, default=8150, help="port of the exchange it starts (8150)")
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--rate", type=float, default=2000.0, help="orders/s offered by `exchange bench`")
    parser.add_argument("--via", choices=["http", "ws", "stream"], default="http",
                        help="how `exchange bench` sends its orders (default http)")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds measured before the load (baseline)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load measured")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    own_dir = None
    exchange = None
    if args.base_url:
        base_url = args.base_url.rstrip("/")
        data_dir = Path(args.data_dir or os.environ.get("EXCHANGE_DATA_DIR", "var"))
    else:
        own_dir = Path(tempfile.mkdtemp(prefix="exchange-ui-load-"))
        own_dir.chmod(0o755)
        data_dir = own_dir
        print(f"starting exchange up (market maker on) in {own_dir}", file=sys.stderr)
        exchange = start_exchange(own_dir, args.port)
        base_url = f"http://127.0.0.1:{args.port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.add_init_script(PROBE)
            page.goto(f"{base_url}/?symbol={args.symbol}")
            page.wait_for_function("() => document.getElementById('conn').dataset.state === 'live'", timeout=60_000)
            print(f"page live; measuring {args.idle:.0f} s with the market maker only", file=sys.stderr)
            idle = measure(page, args.idle)
            print(f"offering {args.rate:.0f} orders/s with `exchange bench --via {args.via}` for {args.duration:.0f} s",
                  file=sys.stderr)
            env = {**os.environ, "EXCHANGE_DATA_DIR": str(data_dir)}
            load = subprocess.Popen([EXCHANGE, "bench", "--via", args.via, "--rate", str(args.rate), "--duration",
                                     str(args.duration + 15), "--base-url", base_url, "--symbols", args.symbol
                                     + ",ETHUSDT", "--no-ws-watch", "--drain", "5", "--out",
                                     str(Path(tempfile.gettempdir()) / "exchange-ui-load-bench")], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(10)  # accounts created and funded, load running
            loaded = measure(page, args.duration)
            during = book_sync(page, base_url, args.symbol)
            output, _ = load.communicate(timeout=args.duration + 180)
            time.sleep(2)
            sync = f"during the load: {during}\nafter it: {book_sync(page, base_url, args.symbol)}"
            browser.close()
            print_result(args, idle, loaded, sync, output)  # before the (possibly slow) stop
    finally:
        if exchange is not None:
            stop_exchange(exchange, data_dir)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
