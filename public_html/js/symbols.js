// Symbol names: validation, parsing user input, and the open set kept across reloads.
import { dropAddressParam } from './address.js';
import { local } from './storage.js';

// A stock symbol, or a crypto pair BASE/QUOTE (BTC/USD) as the relay checks them (services/PROTOCOL.md §1).
const SYMBOL_PATTERN = /^(?:[A-Z][A-Z0-9.-]{0,14}|[A-Z0-9]{1,15}\/[A-Z0-9]{2,10})$/;
const STORAGE_KEY = 'tradeStream.symbols';

export function normalizeSymbol(text) {
  return String(text).trim().toUpperCase();
}

export function isValidSymbol(symbol) {
  return SYMBOL_PATTERN.test(symbol);
}

/** Which Alpaca stream carries a symbol: 'crypto' for a pair (BTC/USD), else 'stocks'. */
export function streamOf(symbol) {
  return String(symbol).includes('/') ? 'crypto' : 'stocks';
}

/** "aapl, msft tsla" -> ["AAPL", "MSFT", "TSLA"] (not yet validated). */
export function splitSymbols(text) {
  return String(text).split(/[\s,]+/).map(normalizeSymbol).filter(Boolean);
}

export function loadSymbols() {
  const stored = local.get(STORAGE_KEY);
  if (!Array.isArray(stored)) return [];
  return stored.filter((s) => typeof s === 'string' && isValidSymbol(s));
}

export function saveSymbols(symbols) {
  local.set(STORAGE_KEY, [...symbols]);
}

/**
 * Stored symbols followed by new ones from ?symbols=, and the URL entries that are not valid symbols.
 * The parameter is then dropped from the address: the symbols are stored, and a reload should not
 * reopen a panel the user has since closed.
 */
export function takeInitialSymbols(location, history, stored = loadSymbols()) {
  const params = new URLSearchParams(location.search);
  const fromUrl = splitSymbols(params.get('symbols') ?? '');
  if (params.has('symbols')) dropAddressParam(location, history, 'search', 'symbols');
  const invalid = fromUrl.filter((s) => !isValidSymbol(s));
  const symbols = [...new Set([...stored, ...fromUrl.filter(isValidSymbol)])];
  return { symbols, invalid };
}
