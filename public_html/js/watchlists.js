// Named watchlists in localStorage: { active, lists: { name: [symbols] } }. The single list of earlier versions
// ('tradeStream.symbols') becomes the list "Main".
import { local } from './storage.js';
import { isValidSymbol } from './symbols.js';

const KEY = 'tradeStream.watchlists';
const OLD_KEY = 'tradeStream.symbols';
export const DEFAULT_LIST = 'Main';

export class Watchlists {
  #data;
  fresh; // nothing was stored before: a first visit

  constructor() {
    const stored = local.get(KEY);
    const old = local.get(OLD_KEY);
    this.fresh = !stored && !Array.isArray(old);
    const lists = {};
    for (const [name, symbols] of Object.entries(stored?.lists ?? {})) {
      if (typeof name === 'string' && name.trim() && Array.isArray(symbols)) lists[name] = clean(symbols);
    }
    if (!Object.keys(lists).length) lists[DEFAULT_LIST] = clean(Array.isArray(old) ? old : []);
    const active = lists[stored?.active] ? stored.active : Object.keys(lists)[0];
    this.#data = { active, lists };
  }

  get active() {
    return this.#data.active;
  }

  names() {
    return Object.keys(this.#data.lists);
  }

  symbols(name = this.#data.active) {
    return [...(this.#data.lists[name] ?? [])];
  }

  setSymbols(symbols, name = this.#data.active) {
    this.#data.lists[name] = clean(symbols);
    this.#save();
  }

  activate(name) {
    if (!this.#data.lists[name]) this.#data.lists[name] = [];
    this.#data.active = name;
    this.#save();
  }

  rename(from, to) {
    if (!this.#data.lists[from] || this.#data.lists[to] || !to.trim()) return false;
    const lists = {};
    for (const [name, symbols] of Object.entries(this.#data.lists)) lists[name === from ? to : name] = symbols;
    this.#data.lists = lists;
    if (this.#data.active === from) this.#data.active = to;
    this.#save();
    return true;
  }

  remove(name) {
    if (this.names().length < 2) return false;
    delete this.#data.lists[name];
    if (this.#data.active === name) this.#data.active = this.names()[0];
    this.#save();
    return true;
  }

  #save() {
    local.set(KEY, this.#data);
  }
}

function clean(symbols) {
  return [...new Set(symbols.filter((s) => typeof s === 'string' && isValidSymbol(s)))];
}
