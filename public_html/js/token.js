// The private-orders token (sessionStorage, or #token=… in the address) and the order-event resume point.
import { dropAddressParam } from './address.js';
import { session } from './storage.js';

const TOKEN_KEY = 'tradeStream.token';
const LAST_EVENT_KEY = 'tradeStream.lastOrderEventId';
const EPOCH_KEY = 'tradeStream.orderJournalEpoch';
const ACCOUNTS_KEY = 'tradeStream.orderPositions'; // {account: "<epoch>-<id>"} when events name their account

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
  /** The resume point as the relay takes it back: "<epoch>-<id>", so an id of a recreated journal is not
   * mistaken for one of the new journal; a bare id when the epoch is not known. */
  get() {
    const positions = session.get(ACCOUNTS_KEY);
    const names = positions && typeof positions === 'object' ? Object.keys(positions).sort() : [];
    if (names.length > 1) return names.map((name) => `${name}:${positions[name]}`).join(','); // compound
    const id = session.get(LAST_EVENT_KEY);
    if (!Number.isInteger(id)) return null;
    const epoch = session.get(EPOCH_KEY);
    return typeof epoch === 'string' && epoch ? `${epoch}-${id}` : id;
  },
  /** Keeps the largest id seen in journal `epoch`; the first id of another journal replaces it. */
  record(id, epoch, account) {
    if (!Number.isInteger(id)) return;
    if (account && typeof epoch === 'string' && epoch) { // several accounts: each journal has its own position
      const positions = { ...(session.get(ACCOUNTS_KEY) ?? {}) };
      const [lastEpoch, lastId] = String(positions[account] ?? '').split('-');
      if (lastEpoch !== epoch || !(Number(lastId) >= id)) positions[account] = `${epoch}-${id}`;
      session.set(ACCOUNTS_KEY, positions);
    }
    const last = session.get(LAST_EVENT_KEY);
    if (typeof epoch === 'string' && epoch && epoch !== session.get(EPOCH_KEY)) {
      session.set(EPOCH_KEY, epoch);
      session.set(LAST_EVENT_KEY, id);
    } else if (!Number.isInteger(last) || id > last) {
      session.set(LAST_EVENT_KEY, id);
    }
  },
  clear() {
    session.remove(ACCOUNTS_KEY);
    session.remove(LAST_EVENT_KEY);
    session.remove(EPOCH_KEY);
  },
};
