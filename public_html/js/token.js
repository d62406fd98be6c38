// The private-orders token (sessionStorage, or #token=… in the address) and the order-event resume point.
import { dropAddressParam } from './address.js';
import { OrderCursor } from './client/cursor.js';
import { session } from './storage.js';

const TOKEN_KEY = 'tradeStream.token';

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

/** The order-event resume point, kept in sessionStorage so a reload resumes where the tab was. */
export const lastOrderEvent = new OrderCursor(session);
