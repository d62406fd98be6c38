// Web Push to this device: registers the page's service worker (sw.js, next to index.html, so its scope is the
// page's own directory, also behind a path prefix such as /trade-stream/), and a button that, once the person
// agrees, subscribes this browser with the daemon's VAPID public key and posts the subscription to
// /api/push/subscriptions (with the token); clicked again it removes it there and unsubscribes the browser.
// The worker shows each push and focuses or opens the page on a click (a click on a notification of this page
// opens the bell's list).
import { tokenStore } from './token.js';

const PATH = 'api/push/subscriptions';

/** The VAPID public key (base64url) as the bytes pushManager.subscribe takes. */
export function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

export class PushToggle {
  #button;
  #state;
  #apiBase;
  #key = null;
  #registration = null;

  constructor(document, apiBase, { onClick } = {}) {
    this.#button = document.getElementById('push-toggle');
    this.#state = document.getElementById('push-state');
    this.#apiBase = apiBase;
    this.#button.addEventListener('click', () => this.#toggle());
    if (onClick && typeof navigator !== 'undefined' && navigator.serviceWorker) {
      navigator.serviceWorker.addEventListener('message', (event) => {
        if (event.data?.type === 'notification-click') onClick(event.data.data);
      });
    }
  }

  /** Where push works (a secure context with service workers and the Push API) and the daemon offers it:
   * register the worker and show the button. */
  async start(config) {
    if (!this.#apiBase || !window.isSecureContext || !('serviceWorker' in navigator) || !('PushManager' in window)) {
      return;
    }
    this.#key = config?.pushPublicKey || (await this.#keyFromDaemon());
    if (!this.#key) return;
    try {
      this.#registration = await navigator.serviceWorker.register('sw.js', { scope: './' });
      await navigator.serviceWorker.ready;
    } catch (error) {
      this.#show(`Push unavailable: the service worker did not register (${error.message})`);
      return;
    }
    this.#button.hidden = false;
    document.documentElement.dataset.pushWorker = 'ready';
    await this.#render();
  }

  async #keyFromDaemon() {
    try {
      const response = await fetch(new URL('api/page-info', this.#apiBase), { cache: 'no-store' });
      return response.ok ? (await response.json()).push_public_key : null;
    } catch {
      return null;
    }
  }

  async #subscription() {
    return this.#registration ? this.#registration.pushManager.getSubscription() : null;
  }

  async #render() {
    const on = Boolean(await this.#subscription());
    this.#button.setAttribute('aria-pressed', String(on));
    this.#button.textContent = on ? 'Push to this device: on' : 'Push to this device';
  }

  #show(text) {
    this.#state.textContent = text;
    this.#state.hidden = !text;
  }

  async #call(method, body) {
    const token = tokenStore.get();
    if (!token) throw new Error('set the token first: push notifications are per user');
    const response = await fetch(new URL(PATH, this.#apiBase), {
      method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      throw new Error(answer.message || `HTTP ${response.status}`);
    }
  }

  async #toggle() {
    this.#button.disabled = true;
    this.#show('');
    try {
      const current = await this.#subscription();
      if (current) {
        await this.#call('DELETE', { endpoint: current.endpoint });
        await current.unsubscribe();
        return;
      }
      if ((await Notification.requestPermission()) !== 'granted') {
        this.#show('Notifications are blocked for this page: allow them in the browser to get pushes');
        return;
      }
      let subscription;
      try {
        subscription = await this.#registration.pushManager.subscribe({
          userVisibleOnly: true, applicationServerKey: keyBytes(this.#key),
        });
      } catch (error) {
        this.#show(`This browser's push service did not answer (${error.message})`);
        return;
      }
      try {
        await this.#call('POST', subscription.toJSON());
      } catch (error) {
        await subscription.unsubscribe(); // the daemon does not have it: do not show it as on
        throw error;
      }
    } catch (error) {
      this.#show(`Push: ${error.message}`);
    } finally {
      this.#button.disabled = false;
      await this.#render();
    }
  }
}
