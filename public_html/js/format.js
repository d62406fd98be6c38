// Pure display helpers: numbers, times and price direction. No DOM access here.

const PRICE = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 2, maximumFractionDigits: 2, useGrouping: false,
});
const SUB_DOLLAR_PRICE = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 4, maximumFractionDigits: 4, useGrouping: false,
});
const SIGNED_PRICE = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 2, maximumFractionDigits: 2, useGrouping: false, signDisplay: 'exceptZero',
});
const SIGNED_SUB_DOLLAR_PRICE = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 4, maximumFractionDigits: 4, useGrouping: false, signDisplay: 'exceptZero',
});
const PERCENT = new Intl.NumberFormat('en-US', {
  style: 'percent', minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: 'exceptZero',
});
const QUANTITY = new Intl.NumberFormat('en-US', { maximumFractionDigits: 4 });
const MONEY = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const SIGNED_MONEY = new Intl.NumberFormat('en-US', {
  minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: 'exceptZero',
});
const EASTERN_TIME = new Intl.DateTimeFormat('en-US', {
  timeZone: 'America/New_York', hourCycle: 'h23',
  hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3,
});

const MISSING = '—';

function toNumber(value) {
  if (value === null || value === undefined || value === '') return NaN;
  return Number(value);
}

function withFormat(value, format) {
  const n = toNumber(value);
  return Number.isFinite(n) ? format.format(n) : MISSING;
}

/** 2 decimals, or 4 below $1. */
export function formatPrice(value) {
  const n = toNumber(value);
  if (!Number.isFinite(n)) return MISSING;
  return (Math.abs(n) < 1 ? SUB_DOLLAR_PRICE : PRICE).format(n);
}

/** Shares or contracts; fractional quantities keep up to 4 decimals. */
export function formatQuantity(value) {
  return withFormat(value, QUANTITY);
}

export function formatMoney(value) {
  return withFormat(value, MONEY);
}

export function formatSignedMoney(value) {
  return withFormat(value, SIGNED_MONEY);
}

/** 'up' | 'down' | 'flat' for a price against the one before it. */
export function priceDirection(previous, price) {
  if (previous === null || previous === undefined || !Number.isFinite(previous)) return 'flat';
  if (price > previous) return 'up';
  if (price < previous) return 'down';
  return 'flat';
}

/** Sign of a P&L or change figure as a direction class. */
export function signDirection(value) {
  return priceDirection(0, toNumber(value));
}

/** Change of `price` against `reference`, formatted for display. */
export function formatChange(price, reference) {
  if (!Number.isFinite(price) || !Number.isFinite(reference) || reference === 0) {
    return { absolute: MISSING, percent: MISSING, direction: 'flat' };
  }
  const delta = price - reference;
  const signed = Math.abs(reference) < 1 ? SIGNED_SUB_DOLLAR_PRICE : SIGNED_PRICE;
  return {
    absolute: signed.format(delta),
    percent: PERCENT.format(delta / reference),
    direction: priceDirection(reference, price),
  };
}

/**
 * Date from an RFC 3339 timestamp. Alpaca sends nanoseconds ("…45.123456789Z"); Date keeps milliseconds,
 * so the fraction is cut to 3 digits before parsing.
 */
export function parseTimestamp(timestamp) {
  if (typeof timestamp !== 'string') return null;
  const date = new Date(timestamp.replace(/(\.\d{1,3})\d*/, '$1'));
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "10:30:45.123" in US Eastern time. */
export function formatEasternTime(timestamp) {
  const date = parseTimestamp(timestamp);
  if (!date) return MISSING;
  const parts = {};
  for (const { type, value } of EASTERN_TIME.formatToParts(date)) parts[type] = value;
  return `${parts.hour}:${parts.minute}:${parts.second}.${parts.fractionalSecond}`;
}

const EXCHANGES = {
  A: 'NYSE American', B: 'Nasdaq BX', C: 'NYSE National', D: 'FINRA ADF', E: 'Market Independent',
  H: 'MIAX Pearl', I: 'Nasdaq ISE', J: 'Cboe EDGA', K: 'Cboe EDGX', L: 'Long-Term Stock Exchange',
  M: 'NYSE Chicago', N: 'NYSE', P: 'NYSE Arca', Q: 'Nasdaq', S: 'Nasdaq (SIP)', T: 'Nasdaq',
  U: 'MEMX', V: 'IEX', W: 'Cboe', X: 'Nasdaq PSX', Y: 'Cboe BYX', Z: 'Cboe BZX',
};

export function exchangeName(code) {
  return EXCHANGES[code] ?? '';
}

const COMPACT = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 2 });

/** 1.23M, 45.6K: day volume in a narrow column. */
export function formatVolume(value) {
  return withFormat(value, COMPACT);
}

/** "4 s", "3 min", "2 h": how long ago, for "last trade N ago". */
export function formatAge(ms) {
  if (!Number.isFinite(ms) || ms < 0) return MISSING;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}
