// The private-orders token (sessionStorage, or #token=… in the address) and the order-event resume point.
import { dropAddressParam } from './address.js';
import { session } from './storage.js';

const TOKEN_KEY = 'tradeStream.token';
const LAST_EVENT_KEY = 'tradeStream.lastOrderEventId';

/** Reads #token=… and removes it from the visible address. */
export function takeTokenFromFragment(location, history) {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = params.get('token');
  if (token === null) return null;
  dropAddressParam(location, history, 'hash', 'token');
  return token.trim() || null;
}

export const tokenStore = {
  get: () => session.get(TOKEN_KEY),
  set: (token) => session.set(TOKEN_KEY, token),
  clear: () => session.remove(TOKEN_KEY),
};

export const lastOrderEvent = {
  get() {
    const id = session.get(LAST_EVENT_KEY);
    return Number.isInteger(id) ? id : null;
  },
  /** Keeps the largest id seen. */
  record(id) {
    if (!Number.isInteger(id)) return;
    const last = this.get();
    if (last === null || id > last) session.set(LAST_EVENT_KEY, id);
  },
  clear: () => session.remove(LAST_EVENT_KEY),
};
