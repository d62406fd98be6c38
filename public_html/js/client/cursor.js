// Where the orders stream resumes: the largest order-event id seen per journal, sent back as `since` after a
// reconnect. Each journal has an epoch (a recreated journal restarts its ids at 1), so the point is
// "<epoch>-<id>"; a user who sees several accounts gets one point per account, "live:<epoch>-<id>,paper:…".
// The values live in a small key-value store: memory by default, sessionStorage for a page that keeps its
// place across reloads.

const KEYS = {
  id: 'tradeStream.lastOrderEventId',
  epoch: 'tradeStream.orderJournalEpoch',
  accounts: 'tradeStream.orderPositions', // {account: "<epoch>-<id>"} when events name their account
};

/** A store of JSON values in memory: what a TradeStream uses unless given another. */
export function memoryStore() {
  const values = new Map();
  return {
    get: (key) => (values.has(key) ? structuredClone(values.get(key)) : null),
    set: (key, value) => values.set(key, structuredClone(value)),
    remove: (key) => values.delete(key),
  };
}

export class OrderCursor {
  #store;

  /** store: { get(key), set(key, value), remove(key) } of JSON values. */
  constructor(store = memoryStore()) {
    this.#store = store;
  }

  /** The resume point as the relay takes it back, or null before any event. */
  get() {
    const positions = this.#store.get(KEYS.accounts);
    const names = positions && typeof positions === 'object' ? Object.keys(positions).sort() : [];
    if (names.length > 1) return names.map((name) => `${name}:${positions[name]}`).join(','); // compound
    const id = this.#store.get(KEYS.id);
    if (!Number.isInteger(id)) return null;
    const epoch = this.#store.get(KEYS.epoch);
    return typeof epoch === 'string' && epoch ? `${epoch}-${id}` : id;
  }

  /** Keeps the largest id seen in journal `epoch`; the first id of another journal replaces it. */
  record(id, epoch, account) {
    if (!Number.isInteger(id)) return;
    if (account && typeof epoch === 'string' && epoch) { // several accounts: each journal has its own position
      const positions = { ...(this.#store.get(KEYS.accounts) ?? {}) };
      const [lastEpoch, lastId] = String(positions[account] ?? '').split('-');
      if (lastEpoch !== epoch || !(Number(lastId) >= id)) positions[account] = `${epoch}-${id}`;
      this.#store.set(KEYS.accounts, positions);
    }
    const last = this.#store.get(KEYS.id);
    if (typeof epoch === 'string' && epoch && epoch !== this.#store.get(KEYS.epoch)) {
      this.#store.set(KEYS.epoch, epoch);
      this.#store.set(KEYS.id, id);
    } else if (!Number.isInteger(last) || id > last) {
      this.#store.set(KEYS.id, id);
    }
  }

  clear() {
    for (const key of Object.values(KEYS)) this.#store.remove(key);
  }
}
