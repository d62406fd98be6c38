// Notifications (order events, Broker account status and activities, price alerts): the bell with the unread
// count, the list of recent ones, "mark all read", desktop alerts (the browser's Notification API, after the
// user allows it with a click) and a short WebAudio sound. What is unread is fetched over REST once the orders
// channel is up (nothing is lost while the page was closed); then `notification` and `notifications_read` arrive
// on the WebSocket, so open tabs stay in step. Which kinds raise a desktop alert or a sound is the user's
// preference, kept by the daemon (GET/PUT api/notifications/preferences) and edited in the panel; kinds off
// for the bell never arrive here at all.
import { el } from './dom.js';
import { formatEasternTime } from './format.js';
import { local } from './storage.js';
import { tokenStore } from './token.js';

const MAX_ROWS = 50;
const SOUND_KEY = 'tradeStream.notificationSound';
const TITLES = {
  order_filled: 'Order filled', order_partial_fill: 'Order partially filled', order_rejected: 'Order rejected',
  price_alert: 'Price alert', account_status: 'Account status', activity: 'Account activity',
};
// The daemon's rule (core/preferences.py), used until its answer is in: a notification carries its kind.
const KIND_OF_TYPE = {
  order_filled: 'fills', order_partial_fill: 'fills', order_rejected: 'rejections', price_alert: 'price_alerts',
  account_status: 'account_status', activity: 'activities',
};
const CHANNELS = ['bell', 'desktop', 'sound', 'email', 'push', 'webhooks'];
const QUIET = ['bell', 'webhooks'];
const DEFAULTS = {
  fills: CHANNELS, rejections: CHANNELS, order_events: QUIET, price_alerts: CHANNELS, account_status: QUIET,
  activities: QUIET,
};
const KIND_LABELS = {
  fills: 'Fills', rejections: 'Rejections', order_events: 'Other order events', price_alerts: 'Price alerts',
  account_status: 'Account status', activities: 'Account activities',
};
const CHANNEL_LABELS = {
  bell: 'Bell', desktop: 'Desktop', sound: 'Sound', email: 'Email', push: 'Push', webhooks: 'Webhooks',
};

/** A notification's preference kind. */
export function kindOf(note) {
  return note.kind ?? KIND_OF_TYPE[note.type] ?? 'order_events';
}

export class NotificationBell {
  #els;
  #apiBase;
  #items = new Map(); // id -> notification, newest shown first
  #unread = 0;
  #live = 0; // read-state updates pushed so far: a REST answer older than one of them must not undo it
  #audio = null;
  #prefs = { ...DEFAULTS }; // kind -> channels, the daemon's answer once it is in
  #kinds = Object.keys(DEFAULTS);
  #channels = CHANNELS;

  constructor(document, apiBase) {
    const $ = (id) => document.getElementById(id);
    this.#apiBase = apiBase;
    this.#els = {
      bell: $('notify-bell'), count: $('notify-count'), panel: $('notify-panel'), list: $('notify-list'),
      empty: $('notify-empty'), readAll: $('notify-read-all'), allow: $('notify-allow'), sound: $('notify-sound'),
      prefsForm: $('notify-prefs-form'), prefsHead: $('notify-prefs-head'), prefsBody: $('notify-prefs-body'),
      prefsState: $('notify-prefs-state'),
    };
    this.#els.prefsForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.savePreferences();
    });
    this.#els.bell.addEventListener('click', () => this.#toggle());
    this.#els.readAll.addEventListener('click', () => this.markAllRead());
    this.#els.allow.addEventListener('click', () => this.#askPermission());
    this.#els.sound.addEventListener('click', () => this.#setSound(!this.soundOn));
    // Browsers start audio only after a user gesture: unlock it on the first click anywhere.
    document.addEventListener('pointerdown', () => this.#audioContext()?.resume?.(), { once: true });
    this.#setSound(this.soundOn);
    this.#showPermission();
    this.#render();
    this.#renderPrefs();
  }

  /** The channels the user wants ``kind`` on. */
  channelsFor(kind) {
    return this.#prefs[kind] ?? DEFAULTS[kind] ?? QUIET;
  }

  async loadPreferences() {
    const token = tokenStore.get();
    if (!token || !this.#apiBase) return;
    try {
      const response = await fetch(new URL('api/notifications/preferences', this.#apiBase), {
        headers: { Authorization: `Bearer ${token}` }, cache: 'no-store',
      });
      if (response.ok) this.#usePrefs(await response.json());
    } catch {
      // offline: the defaults hold until the next refresh
    }
  }

  /** Send what the editor shows; the daemon answers what it stored, which the editor then shows. */
  async savePreferences() {
    const token = tokenStore.get();
    const { prefsState, prefsBody } = this.#els;
    if (!token || !this.#apiBase) {
      prefsState.textContent = 'Preferences need the token.';
      return;
    }
    const wanted = Object.fromEntries(this.#kinds.map((kind) => [kind, []]));
    for (const box of prefsBody.querySelectorAll('input[type=checkbox]')) {
      if (box.checked) wanted[box.dataset.kind].push(box.dataset.channel);
    }
    prefsState.textContent = 'Saving…';
    try {
      const response = await fetch(new URL('api/notifications/preferences', this.#apiBase), {
        method: 'PUT', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(wanted),
      });
      const body = await response.json();
      if (!response.ok) {
        prefsState.textContent = body.message ?? `Not saved (HTTP ${response.status}).`;
        return;
      }
      this.#usePrefs(body);
      prefsState.textContent = 'Saved.';
    } catch {
      prefsState.textContent = 'Not saved: the relay cannot be reached.';
    }
  }

  #usePrefs(body) {
    if (!body?.preferences) return;
    this.#prefs = body.preferences;
    if (Array.isArray(body.kinds)) this.#kinds = body.kinds;
    if (Array.isArray(body.channels)) this.#channels = body.channels;
    this.#renderPrefs();
  }

  #renderPrefs() {
    const { prefsHead, prefsBody } = this.#els;
    prefsHead.replaceChildren(el('tr', {}, el('th', { scope: 'col', text: 'Kind' }),
      ...this.#channels.map((c) => el('th', { scope: 'col', text: CHANNEL_LABELS[c] ?? c }))));
    prefsBody.replaceChildren(...this.#kinds.map((kind) => el('tr', { dataset: { kind } },
      el('th', { scope: 'row', text: KIND_LABELS[kind] ?? kind }),
      ...this.#channels.map((channel) => el('td', {}, el('input', {
        type: 'checkbox', id: `pref-${kind}-${channel}`, dataset: { kind, channel },
        'aria-label': `${KIND_LABELS[kind] ?? kind} on ${CHANNEL_LABELS[channel] ?? channel}`,
        checked: this.channelsFor(kind).includes(channel),
      }))))));
  }

  get soundOn() {
    return local.get(SOUND_KEY) !== false; // on by default
  }

  /** The orders channel is up: load what is unread and recent. */
  async refresh() {
    const token = tokenStore.get();
    if (!token || !this.#apiBase) return;
    this.loadPreferences();
    const live = this.#live;
    try {
      const response = await fetch(new URL('api/notifications/trades?limit=20', this.#apiBase), {
        headers: { Authorization: `Bearer ${token}` }, cache: 'no-store',
      });
      if (!response.ok) return;
      const body = await response.json();
      // Pushed while this was on its way, a notification or a read change is newer than the answer.
      for (const note of body.notifications ?? []) if (!this.#items.has(note.id)) this.#items.set(note.id, note);
      if (this.#live === live) this.#unread = body.unread ?? 0;
      this.#render();
    } catch {
      // offline: the WebSocket pushes keep the bell current once it is back
    }
  }

  /** True when the message was a notification or a read-state change. */
  handleMessage(message) {
    if (message.type === 'notification') {
      const note = message.data ?? {};
      if (note.id !== null && note.id !== undefined) this.#items.set(note.id, note);
      if (Number.isInteger(message.unread)) this.#setLiveUnread(message.unread);
      this.#render();
      this.#alert(note);
      return true;
    }
    if (message.type === 'notifications_read') {
      const ids = new Set(message.ids ?? []);
      for (const note of this.#items.values()) {
        if (message.all || ids.has(note.id)) note.read = true;
      }
      if (Number.isInteger(message.unread)) this.#setLiveUnread(message.unread);
      this.#render();
      return true;
    }
    return false;
  }

  #setLiveUnread(count) {
    this.#unread = count;
    this.#live++;
  }

  async markAllRead() {
    const token = tokenStore.get();
    if (!token || !this.#apiBase) return;
    try {
      const response = await fetch(new URL('api/notifications/trades/read', this.#apiBase), {
        method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ all: true }),
      });
      if (response.ok) this.handleMessage({ type: 'notifications_read', all: true, ...(await response.json()) });
    } catch {
      // the relay is away; the button can be pressed again
    }
  }

  /** Open the list (a push notification of this page was clicked). */
  show() {
    if (this.#els.panel.hidden) this.#toggle();
  }

  #toggle() {
    const open = this.#els.panel.hidden;
    this.#els.panel.hidden = !open;
    this.#els.bell.setAttribute('aria-expanded', String(open));
    this.#showPermission();
  }

  #render() {
    const { count, bell, list, empty, readAll } = this.#els;
    count.textContent = this.#unread > 99 ? '99+' : String(this.#unread);
    count.hidden = this.#unread === 0;
    bell.dataset.unread = String(this.#unread);
    bell.setAttribute('aria-label', `Notifications: ${this.#unread} unread`);
    const newest = [...this.#items.values()].sort((a, b) => b.id - a.id).slice(0, MAX_ROWS);
    for (const id of this.#items.keys()) if (!newest.some((n) => n.id === id)) this.#items.delete(id);
    list.replaceChildren(...newest.map(row));
    empty.hidden = newest.length > 0;
    readAll.disabled = this.#unread === 0;
  }

  /** The desktop alert and the sound, each if the user wants this kind there (falling tones: something wrong). */
  #alert(note) {
    const wanted = this.channelsFor(kindOf(note));
    if (wanted.includes('sound')) this.#beep(note.level === 'warning' || note.level === 'error');
    if (!wanted.includes('desktop')) return;
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    try {
      const title = `trade-stream: ${TITLES[note.type] ?? 'Notification'}`;
      new Notification(title, { body: note.message, tag: `trade-stream-${note.id}` });
    } catch {
      // some platforms allow notifications only from a service worker: the bell still counts it
    }
  }

  async #askPermission() {
    if (typeof Notification === 'undefined') return;
    try {
      await Notification.requestPermission();
    } finally {
      this.#showPermission();
    }
  }

  #showPermission() {
    const supported = typeof Notification !== 'undefined';
    this.#els.allow.hidden = !supported || Notification.permission !== 'default';
  }

  #setSound(on) {
    local.set(SOUND_KEY, on);
    this.#els.sound.setAttribute('aria-pressed', String(on));
    this.#els.sound.textContent = on ? 'Sound on' : 'Sound off';
  }

  #audioContext() {
    if (!this.#audio) {
      const Context = window.AudioContext ?? window.webkitAudioContext;
      if (!Context) return null;
      this.#audio = new Context();
    }
    return this.#audio;
  }

  /** Two short tones: rising for a fill, falling for a rejection. Silent until the page has had a click. */
  #beep(falling) {
    if (!this.soundOn) return;
    const context = this.#audioContext();
    if (!context || context.state !== 'running') return;
    const start = context.currentTime;
    const [first, second] = falling ? [660, 440] : [660, 990];
    for (const [i, frequency] of [first, second].entries()) {
      const osc = context.createOscillator();
      const gain = context.createGain();
      osc.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + i * 0.12);
      gain.gain.exponentialRampToValueAtTime(0.2, start + i * 0.12 + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.12 + 0.11);
      osc.connect(gain).connect(context.destination);
      osc.start(start + i * 0.12);
      osc.stop(start + i * 0.12 + 0.12);
    }
  }
}

function row(note) {
  const time = note.timestamp ? formatEasternTime(note.timestamp) : '';
  const dataset = { type: note.type ?? '', id: String(note.id), level: note.level ?? 'info' };
  return el('li', { class: `notify-row${note.read ? '' : ' unread'}`, dataset },
    el('span', { class: 'notify-time muted', text: time }),
    el('span', { class: 'notify-message', text: note.message ?? '' }));
}
