// The selected symbol: its headline, an intraday one-minute chart with volume (TradingView Lightweight Charts,
// vendored), and its tape beside it. The tape's DOM work is throttled: at most TAPE_EVERY_MS apart, whatever
// the trade rate, since nobody reads faster than that. Both redraw inside the watchlist's render (so a busy
// feed costs one page render, not three); a timer only catches the last change once the feed goes quiet.
import {
  CandlestickSeries, ColorType, HistogramSeries, createChart, createSeriesMarkers,
} from '../vendor/lightweight-charts/lightweight-charts.esm.js';
import { el } from './dom.js';
import {
  exchangeName, formatChange, formatEasternTime, formatPrice, formatQuantity,
} from './format.js';
import { streamOf } from './symbols.js';

const TAPE_EVERY_MS = 200;
const QUIET_MS = 150; // no render came within this after a redraw was due: the timer draws it
const CHART_EVERY_MS = 250; // a one-minute bar chart gains nothing from 60 redraws a second
// Minute bars further apart than this are in different sessions (overnight, a weekend, a holiday): the chart
// leaves an empty slot between them and marks the first bar after it, so yesterday's close does not read as a
// jump within the day. Quiet minutes inside a session are far shorter.
const SESSION_BREAK_S = 2 * 3600;
const BREAK_DAY = new Intl.DateTimeFormat('en-US', {
  timeZone: 'America/New_York', weekday: 'short', month: 'short', day: 'numeric',
});
const ROW_TEMPLATE = el('tr', { class: 'trade' },
  el('td', { class: 'time' }), el('td', { class: 'price' }), el('td', { class: 'size' }),
  el('td', { class: 'exchange' }));
const GAP_TIME = new Intl.DateTimeFormat('en-US', {
  timeZone: 'America/New_York', hourCycle: 'h23', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

export class Detail {
  #els;
  #ticker = null;
  #chart = null;
  #candles = null;
  #breaks = null; // the session-break markers on the candles
  #volume = null;
  #shownBars = -1;
  #shape = -1;
  #shownTape = -1;
  #tapeAt = -Infinity;
  #shownVersion = -1;
  #chartAt = -Infinity;
  #timers = { chart: 0, tape: 0 };
  #volColours = null;
  #alerts = []; // the user's alerts (price lines for the shown symbol's armed crossing levels)
  #alertLines = [];
  #onChartClick = null;

  constructor(document) {
    const $ = (id) => document.getElementById(id);
    this.#els = {
      section: $('detail'), symbol: $('detail-symbol'), last: $('detail-last'), change: $('detail-change'),
      chart: $('chart'), chartNote: $('chart-note'), tape: $('tape'), tbody: $('tape').tBodies[0],
      tapeEmpty: $('tape-empty'), tapeCaption: $('tape-caption'), news: $('detail-news'),
    };
  }

  get symbol() {
    return this.#ticker?.symbol ?? null;
  }

  show(ticker) {
    this.#ticker = ticker;
    this.#shownBars = this.#shownTape = this.#shownVersion = this.#shape = -1;
    this.#tapeAt = this.#chartAt = -Infinity;
    const { section, symbol, tapeCaption } = this.#els;
    section.hidden = !ticker;
    section.dataset.symbol = ticker?.symbol ?? '';
    section.dataset.stream = ticker ? streamOf(ticker.symbol) : '';
    symbol.textContent = ticker?.symbol ?? '';
    tapeCaption.textContent = ticker ? `${ticker.symbol} trades, newest first` : 'Trades';
    this.#els.tbody.replaceChildren();
    if (!ticker) return;
    this.#ensureChart();
    this.#drawAlertLines();
    this.render();
  }

  /** The user's price alerts changed: one price line per armed crossing level of the shown symbol. */
  setAlerts(alerts) {
    this.#alerts = alerts;
    this.#drawAlertLines();
  }

  /** handler(symbol, price, last): the chart was clicked at that price (the page offers an alert there). */
  onChartClick(handler) {
    this.#onChartClick = handler;
  }

  #drawAlertLines() {
    if (!this.#candles) return;
    for (const line of this.#alertLines) this.#candles.removePriceLine(line);
    const symbol = this.symbol;
    const levels = this.#alerts.filter((a) => a.symbol === symbol && a.state === 'armed'
      && (a.condition === 'crosses_above' || a.condition === 'crosses_below'));
    this.#alertLines = levels.map((a) => this.#candles.createPriceLine({
      price: a.price, color: cssVar('--accent', '#d29922'), lineWidth: 1, lineStyle: 2, axisLabelVisible: true,
      title: a.condition === 'crosses_above' ? 'alert ▲' : 'alert ▼',
    }));
    this.#els.chart.dataset.alertLines = levels.map((a) => a.price).join(',');
  }

  /** The latest headline about the selected symbol, one quiet line under its price (a link when it has one). */
  #showHeadline(news) {
    const { news: box } = this.#els;
    box.hidden = !news?.headline;
    if (box.hidden) return;
    const link = box.firstElementChild;
    if (link.textContent !== news.headline) link.textContent = news.headline;
    const url = /^https?:/.test(news.url ?? '') ? news.url : '';
    if (url) link.href = url; else link.removeAttribute('href');
    box.title = `${news.source ?? ''} ${news.created_at ?? ''}`.trim();
  }

  /** Once per frame when the selected ticker changed. */
  render() {
    const t = this.#ticker;
    if (!t) return;
    this.#showHeadline(t.headline);
    if (t.version !== this.#shownVersion) {
      this.#shownVersion = t.version;
      const change = formatChange(t.last, t.reference);
      this.#els.last.textContent = formatPrice(t.last);
      this.#els.change.textContent = change.absolute === '—' ? '' : `${change.absolute} (${change.percent})`;
      this.#els.change.className = `change ${change.direction}`;
      this.#els.change.title = `Change since ${t.referenceLabel}`;
    }
    if (t.barsVersion !== this.#shownBars) {
      const wait = this.#chartAt + CHART_EVERY_MS - performance.now();
      if (wait <= 0 || t.barsShape !== this.#shape) {
        this.#cancel('chart');
        this.#drawBars();
      } else {
        this.#later('chart', wait);
      }
    }
    if (t.tapeVersion !== this.#shownTape) {
      const wait = this.#tapeAt + TAPE_EVERY_MS - performance.now();
      if (wait <= 0) {
        this.#cancel('tape');
        this.#drawTape();
      } else {
        this.#later('tape', wait);
      }
    }
  }

  #cancel(what) {
    clearTimeout(this.#timers[what]);
    this.#timers[what] = 0;
  }

  #later(what, wait) {
    if (this.#timers[what]) return;
    this.#timers[what] = setTimeout(() => {
      this.#timers[what] = 0;
      requestAnimationFrame(() => this.render());
    }, wait + QUIET_MS);
  }

  /** Chart colours follow the theme. */
  applyTheme() {
    if (!this.#chart) return;
    this.#volColours = null;
    this.#shape = -1; // volume bars are coloured per bar: set them all again
    this.#chart.applyOptions(chartOptions());
    this.#candles.applyOptions(candleOptions());
    this.#shownBars = -1;
    this.render();
  }

  #ensureChart() {
    if (this.#chart) return;
    this.#chart = createChart(this.#els.chart, { ...chartOptions(), autoSize: true });
    this.#candles = this.#chart.addSeries(CandlestickSeries, candleOptions());
    this.#breaks = createSeriesMarkers(this.#candles, []);
    this.#volume = this.#chart.addSeries(HistogramSeries, {
      priceFormat: { type: 'volume' }, priceScaleId: 'volume', lastValueVisible: false, priceLineVisible: false,
    });
    this.#chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.#candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
    this.#chart.subscribeClick((param) => {
      if (!param.point || !this.symbol || !this.#onChartClick) return;
      const price = this.#candles.coordinateToPrice(param.point.y);
      if (Number.isFinite(price)) this.#onChartClick(this.symbol, price, this.#ticker?.last);
    });
  }

  #drawBars() {
    const t = this.#ticker;
    this.#shownBars = t.barsVersion;
    this.#chartAt = performance.now();
    const bars = t.bars;
    // read once per theme: getComputedStyle here, after this frame's cell writes, would force a style pass
    this.#volColours ??= [cssVar('--up-vol', 'rgba(63,185,80,0.45)'), cssVar('--down-vol', 'rgba(248,81,73,0.45)')];
    const [up, down] = this.#volColours;
    const vol = (b) => ({ time: b.time, value: b.volume, color: b.close >= b.open ? up : down });
    if (bars.length && t.barsShape === this.#shape) {
      const last = bars[bars.length - 1];
      this.#candles.update(last);
      this.#volume.update(vol(last));
    } else {
      const { data, starts } = withSessionBreaks(bars);
      this.#candles.setData(data);
      this.#volume.setData(data.map((b) => (b.open === undefined ? b : vol(b))));
      this.#breaks.setMarkers(starts.map((time) => ({
        time, position: 'aboveBar', shape: 'arrowDown', color: cssVar('--muted', '#8b949e'),
        text: BREAK_DAY.format(new Date(time * 1000)),
      })));
      this.#els.chart.dataset.sessionBreaks = String(starts.length);
    }
    this.#shape = t.barsShape;
    this.#els.section.dataset.bars = String(bars.length);
    this.#els.chart.dataset.lastClose = bars.length ? String(bars[bars.length - 1].close) : '';
    this.#els.chartNote.textContent = bars.length ? '' : 'No bars yet today.';
  }

  #drawTape() {
    const t = this.#ticker;
    if (!t) return;
    this.#tapeAt = performance.now();
    this.#shownTape = t.tapeVersion;
    const { tbody } = this.#els;
    // Rows are keyed by their entry object: new entries are prepended, the rest stay in the DOM.
    const have = tbody.rows.length ? tbody.rows[0].__entry : null;
    const fresh = [];
    for (const entry of t.tape) {
      if (entry === have) break;
      fresh.push(entry);
    }
    if (fresh.length >= t.tape.length || (have && !t.tape.includes(have))) {
      tbody.replaceChildren(...t.tape.map(rowOf));
    } else if (fresh.length) {
      const fragment = document.createDocumentFragment();
      fragment.append(...fresh.map(rowOf));
      tbody.prepend(fragment);
      while (tbody.rows.length > t.tape.length) tbody.lastElementChild.remove();
    }
    this.#els.tapeEmpty.hidden = t.tape.length > 0;
  }
}

function rowOf(entry) {
  if (entry.gap) {
    const row = el('tr', { class: 'gap' }, el('td', {
      colspan: '4',
      text: `gap: ${entry.reason ?? 'reconnected'} at ${GAP_TIME.format(new Date(entry.at))} ET; trades in between not shown`,
    }));
    row.__entry = entry;
    return row;
  }
  const row = ROW_TEMPLATE.cloneNode(true);
  const [time, price, size, exchange] = row.cells;
  const { trade } = entry;
  row.classList.add(entry.direction);
  row.dataset.price = String(entry.price);
  row.dataset.size = String(trade.size);
  time.textContent = formatEasternTime(trade.timestamp);
  time.title = trade.timestamp ?? '';
  price.textContent = formatPrice(entry.price); // the ▲/▼ is CSS content, so the cell's text is the price
  size.textContent = formatQuantity(trade.size);
  exchange.textContent = trade.exchange ?? '';
  exchange.title = exchangeName(trade.exchange);
  row.__entry = entry;
  return row;
}

/** The bars with a whitespace point (an empty slot) before each bar that starts a new session, and the times of
 * those first bars. */
export function withSessionBreaks(bars) {
  const data = [];
  const starts = [];
  for (let i = 0; i < bars.length; i++) {
    if (i > 0 && bars[i].time - bars[i - 1].time > SESSION_BREAK_S) {
      data.push({ time: bars[i - 1].time + 60 });
      starts.push(bars[i].time);
    }
    data.push(bars[i]);
  }
  return { data, starts };
}

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function chartOptions() {
  return {
    layout: {
      background: { type: ColorType.Solid, color: cssVar('--panel', '#161b22') },
      textColor: cssVar('--muted', '#8b949e'), fontSize: 11,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace',
    },
    grid: { vertLines: { color: cssVar('--grid', '#21262d') }, horzLines: { color: cssVar('--grid', '#21262d') } },
    rightPriceScale: { borderColor: cssVar('--border', '#30363d') },
    timeScale: {
      borderColor: cssVar('--border', '#30363d'), timeVisible: true, secondsVisible: false,
      // room right of the newest bar: its time label is centred on it and would be cut by the price scale
      rightOffset: 6, barSpacing: 8, minBarSpacing: 2,
      tickMarkFormatter: (time) => GAP_TIME.format(new Date(time * 1000)).slice(0, 5),
    },
    localization: { timeFormatter: (time) => GAP_TIME.format(new Date(time * 1000)).slice(0, 5) },
  };
}

function candleOptions() {
  const up = cssVar('--up', '#3fb950');
  const down = cssVar('--down', '#f85149');
  return { upColor: up, downColor: down, borderUpColor: up, borderDownColor: down, wickUpColor: up, wickDownColor: down };
}
