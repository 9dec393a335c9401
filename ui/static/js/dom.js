// Small DOM helpers (no framework).

export const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes: never innerHTML with data). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style') el.setAttribute('style', v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

export function setMsg(el, text, kind = 'error') {
  el.textContent = text || '';
  el.dataset.kind = text ? kind : '';
}

export const time = (ms) => new Date(ms).toISOString().slice(11, 19);
export const dateTime = (ms) => new Date(ms).toISOString().slice(5, 19).replace('T', ' ');

let toastTimer = null;
export function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
}
