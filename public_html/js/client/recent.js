// The ids seen lately, to drop an event that arrives twice (a replay overlapping what was already delivered)
// in bounded memory: a Set keeps insertion order, so the oldest key is the first one to evict.

export class RecentIds {
  #keys = new Set();
  #capacity;

  constructor(capacity = 5_000) {
    this.#capacity = capacity;
  }

  get size() {
    return this.#keys.size;
  }

  /** True the first time `key` is offered (it is then remembered), false for a repeat. */
  add(key) {
    if (this.#keys.has(key)) return false;
    this.#keys.add(key);
    if (this.#keys.size > this.#capacity) this.#keys.delete(this.#keys.values().next().value);
    return true;
  }

  /** Forgets the keys starting with `prefix` (all of them without one). */
  clear(prefix = '') {
    if (!prefix) {
      this.#keys.clear();
      return;
    }
    for (const key of this.#keys) if (key.startsWith(prefix)) this.#keys.delete(key);
  }
}
