// Exact decimal arithmetic for money in the browser: BigInt scaled by 10^18, never floats.

const SCALE = 18;
const ONE = 10n ** BigInt(SCALE);
const RE = /^(\d{1,20})(?:\.(\d{1,18}))?$/;

/** The scaled BigInt of a decimal string ("12.5"), or null if it is not a plain non-negative decimal. */
export function parse(text) {
  const m = RE.exec(String(text ?? '').trim());
  if (!m) return null;
  const frac = (m[2] || '').padEnd(SCALE, '0');
  return BigInt(m[1]) * ONE + BigInt(frac);
}

/** Like parse, for trusted server strings (may be negative); 0 for junk. */
export function of(text) {
  const s = String(text ?? '0');
  const neg = s.startsWith('-');
  const v = parse(neg ? s.slice(1) : s);
  if (v === null) return 0n;
  return neg ? -v : v;
}

export const mul = (a, b) => (a * b) / ONE;
export const div = (a, b) => (b === 0n ? 0n : (a * ONE) / b);
export const isMultiple = (a, step) => step === 0n || a % step === 0n;
export const min = (a, b) => (a < b ? a : b);
export const ZERO = 0n;

/** `value` as a string with exactly `places` decimals (truncated toward zero). */
export function format(value, places) {
  const neg = value < 0n;
  let v = neg ? -value : value;
  const cut = 10n ** BigInt(SCALE - places);
  v /= cut;
  const s = v.toString().padStart(places + 1, '0');
  const out = places ? `${s.slice(0, -places)}.${s.slice(-places)}` : s;
  return (neg ? '-' : '') + out;
}

/** `value` rounded down to a multiple of `step`. */
export const floorTo = (value, step) => (step === 0n ? value : value - (value % step));

/** The number of decimals a step like "0.01000000" really has (2). */
export function decimalsOf(text) {
  const s = String(text);
  const dot = s.indexOf('.');
  if (dot < 0) return 0;
  const frac = s.slice(dot + 1).replace(/0+$/, '');
  return frac.length;
}

/** A server decimal string shown with `places` decimals. */
export const show = (text, places) => format(of(text), places);

/** Group the integer part with thin separators for reading. */
export function pretty(text) {
  const [i, f] = String(text).split('.');
  const grouped = i.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return f === undefined ? grouped : `${grouped}.${f}`;
}
