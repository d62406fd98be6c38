// React hooks over a TradeStream: live prices, app channels, orders and positions as component state.
//
// React comes in as an argument, createHooks(React), instead of `import … from 'react'`: React publishes no
// browser ES module build, so a page without a build step has no file a bare 'react' could resolve to (an
// import map would have to point at a React the app bundled or fetched itself), and a second copy of React
// resolved that way would break hooks ("invalid hook call"). Passing the app's own React works the same
// in a native-ESM page and under a bundler, with React 18 or 19 (useSyncExternalStore is in both).
import { TradeStream } from './index.js';

const DEFAULT_EVENTS = 50;
const DEFAULT_ORDERS = 100;

/**
 * The hooks, bound to one React. Each hook takes { stream } to use another TradeStream than `stream` here,
 * which defaults to TradeStream.shared() (create it once with TradeStream.shared({url, …}) before rendering).
 */
export function createHooks(React, { stream = null } = {}) {
  const { useEffect, useMemo, useState, useSyncExternalStore } = React;
  const streamOf = (options) => options?.stream ?? stream ?? TradeStream.shared();

  /** A value a hook owns: set() replaces it and re-renders the component. */
  function useStore(initial) {
    const store = useState(() => createStore(initial))[0];
    return [useSyncExternalStore(store.subscribe, store.get, store.get), store];
  }

  /** { connected, error } of the stream: the socket is up and welcomed; the last problem, in words. */
  function useConnection(options) {
    const s = streamOf(options);
    const report = useSyncExternalStore(
      (onChange) => s.on('state', onChange), () => s.state, () => s.state);
    return { connected: report.connected, error: report.error };
  }

  /**
   * Live prices: { prices, connected, error }. prices[SYMBOL] is { symbol, price, size, timestamp (of the last
   * trade), bid, ask, bidSize, askSize, prevClose } once the symbol's snapshot or first trade has come (the
   * relay sends the snapshot right after subscribing, so a price shows even when the market is closed).
   * error also names a symbol the relay refused ("ZZZZ1: invalid symbol").
   */
  function useMarketStream(symbols, options = {}) {
    const s = streamOf(options);
    const key = [...new Set((symbols ?? []).map((symbol) => String(symbol).toUpperCase()))].sort().join(',');
    const [state, store] = useStore({ prices: {}, refused: {} });
    useEffect(() => {
      const wanted = key ? key.split(',') : [];
      const kept = Object.fromEntries(wanted.filter((sym) => store.get().prices[sym])
        .map((sym) => [sym, store.get().prices[sym]]));
      store.set({ prices: kept, refused: {} });
      if (!wanted.length) return undefined;
      return s.subscribe(wanted, {
        channels: options.channels ?? ['trades', 'quotes'],
        onMessage: (message) => {
          const { prices, refused } = store.get();
          const next = priceAfter(prices[message.symbol], message);
          if (next) store.set({ prices: { ...prices, [message.symbol]: next }, refused });
        },
        onStatus: (symbol, status, detail) => {
          const { prices, refused } = store.get();
          const wasRefused = symbol in refused;
          if (status === 'rejected' || status === 'unsubscribed') {
            store.set({ prices, refused: { ...refused, [symbol]: detail } });
          } else if (wasRefused) {
            const { [symbol]: _gone, ...rest } = refused;
            store.set({ prices, refused: rest });
          }
        },
      });
    }, [s, key, String(options.channels ?? '')]);
    const { connected, error } = useConnection({ stream: s });
    const refusedText = Object.entries(state.refused).map(([sym, why]) => `${sym}: ${why}`).join('; ');
    return { prices: state.prices, connected, error: error ?? (refusedText || null) };
  }

  /**
   * An app channel: { events, last, reset, connected, error }. events: the newest `limit` event messages
   * ({ channel, event, id, data }), newest first; last: the newest one (or null); reset: the relay's reset
   * message when the resume point was too old (refetch what the events build on), else null; error: the
   * channel refused (unauthorized) or the connection's problem.
   */
  function useChannel(name, options = {}) {
    const s = streamOf(options);
    const limit = options.limit ?? DEFAULT_EVENTS;
    const [state, store] = useStore({ events: [], reset: null, error: null });
    useEffect(() => {
      store.set({ events: [], reset: null, error: null });
      if (!name) return undefined;
      return s.channel(name, (message) => {
        const now = store.get();
        if (message.type === 'event') store.set({ ...now, events: [message, ...now.events].slice(0, limit) });
        else if (message.type === 'reset') store.set({ ...now, reset: message });
        else if (message.type === 'error') store.set({ ...now, error: message.message || message.code });
        else if (message.type === 'subscribed' && now.error) store.set({ ...now, error: null });
      }, { since: options.since ?? null });
    }, [s, name, limit]);
    const { connected, error } = useConnection({ stream: s });
    return { events: state.events, last: state.events[0] ?? null, reset: state.reset, connected,
      error: state.error ?? error };
  }

  /**
   * The user's orders: { orders, events, authenticated, connected, error }. orders: the latest state of each
   * order (Alpaca order objects with `account`), most recently changed first, at most `limit`; events: the
   * newest `limit` order_update messages, newest first. Needs a stream made with a token (or getToken).
   */
  function useOrders(options = {}) {
    const s = streamOf(options);
    const limit = options.limit ?? DEFAULT_ORDERS;
    const [state, store] = useStore({ orders: new Map(), events: [] });
    useEffect(() => {
      store.set({ orders: new Map(), events: [] });
      return s.orders((message) => {
        const now = store.get();
        const account = message.account ?? '';
        if (message.type === 'orders_snapshot') {
          const orders = new Map([...now.orders].filter(([, order]) => order.account !== account));
          for (const order of message.orders ?? []) orders.set(`${account}|${order.id}`, { ...order, account });
          store.set({ ...now, orders: newest(orders, limit) });
        } else if (message.type === 'order_update') {
          const order = message.data?.order;
          const orders = new Map(now.orders);
          if (order?.id) {
            orders.delete(`${account}|${order.id}`);
            orders.set(`${account}|${order.id}`, { ...order, account });
          }
          store.set({ orders: newest(orders, limit), events: [message, ...now.events].slice(0, limit) });
        }
      });
    }, [s, limit]);
    const auth = useAuth(s);
    const { connected, error } = useConnection({ stream: s });
    const orders = useMemo(() => [...state.orders.values()].reverse(), [state.orders]);
    return { orders, events: state.events, authenticated: auth.state === 'authenticated', connected, error };
  }

  /**
   * The user's positions: { positions, portfolio, authenticated, connected, error }. positions: Alpaca
   * position objects with `account`, by account then symbol (a closed position leaves); portfolio: the
   * user's { market_value, unrealized_pl } summed over their accounts.
   */
  function usePositions(options = {}) {
    const s = streamOf(options);
    const [state, store] = useStore({ positions: new Map(), portfolios: new Map() });
    useEffect(() => {
      store.set({ positions: new Map(), portfolios: new Map() });
      return s.orders((message) => {
        const now = store.get();
        const account = message.account ?? '';
        if (message.type === 'orders_snapshot') {
          const positions = new Map([...now.positions].filter(([, p]) => p.account !== account));
          for (const p of message.positions ?? []) positions.set(`${account}|${p.symbol}`, { ...p, account });
          const portfolios = new Map(now.portfolios).set(account, message.portfolio ?? null);
          store.set({ positions, portfolios });
        } else if (message.type === 'position_update' && message.symbol) {
          const positions = new Map(now.positions);
          const { type: _type, portfolio, ...position } = message;
          if (Number(message.qty) === 0) positions.delete(`${account}|${message.symbol}`);
          else positions.set(`${account}|${message.symbol}`, { ...position, account });
          const portfolios = portfolio ? new Map(now.portfolios).set(account, portfolio) : now.portfolios;
          store.set({ positions, portfolios });
        }
      });
    }, [s]);
    const auth = useAuth(s);
    const { connected, error } = useConnection({ stream: s });
    const positions = useMemo(() => [...state.positions.entries()].sort(([a], [b]) => a.localeCompare(b))
      .map(([, position]) => position), [state.positions]);
    const portfolio = useMemo(() => {
      const total = { market_value: 0, unrealized_pl: 0 };
      for (const p of state.portfolios.values()) {
        total.market_value += Number(p?.market_value) || 0;
        total.unrealized_pl += Number(p?.unrealized_pl) || 0;
      }
      return total;
    }, [state.portfolios]);
    return { positions, portfolio, authenticated: auth.state === 'authenticated', connected, error };
  }

  function useAuth(s) {
    const [auth, setAuth] = useState(() => s.auth);
    useEffect(() => {
      setAuth(s.auth);
      return s.on('auth', setAuth);
    }, [s]);
    return auth;
  }

  return { useMarketStream, useChannel, useOrders, usePositions, useConnection };
}

/** A value with listeners, read by useSyncExternalStore. */
function createStore(initial) {
  let value = initial;
  const listeners = new Set();
  return {
    get: () => value,
    set(next) {
      value = next;
      for (const listener of listeners) listener();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** A symbol's price entry after one market message (null when the message changes nothing shown). */
function priceAfter(previous, { type, symbol, data }) {
  if (!data) return null;
  const entry = previous ?? { symbol, price: null, size: null, timestamp: null, bid: null, ask: null,
    bidSize: null, askSize: null, prevClose: null };
  if (type === 'trade') return { ...entry, price: data.price, size: data.size, timestamp: data.timestamp };
  if (type === 'quote') {
    return { ...entry, bid: data.bid_price, ask: data.ask_price, bidSize: data.bid_size, askSize: data.ask_size };
  }
  if (type === 'snapshot') {
    const trade = data.latest_trade;
    const prevClose = data.prev_close ?? entry.prevClose;
    if (entry.price !== null || !trade) return { ...entry, prevClose };
    return { ...entry, price: trade.price, size: trade.size, timestamp: trade.timestamp, prevClose };
  }
  return null;
}

/** The last `limit` entries of a Map in insertion order (the most recently changed are last). */
function newest(map, limit) {
  while (map.size > limit) map.delete(map.keys().next().value);
  return map;
}
