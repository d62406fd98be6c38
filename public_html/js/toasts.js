// Short-lived notices in the corner for errors that belong to no panel.
import { el } from './dom.js';

const SHOW_MS = 6_000;
const MAX_TOASTS = 4;

export class Toasts {
  #container;
  #timers = new Map();

  constructor(container) {
    this.#container = container;
  }

  show(text) {
    const existing = [...this.#container.children].find((toast) => toast.dataset.text === text);
    const toast = existing ?? el('div', { class: 'toast', dataset: { text } },
      el('span', { text }),
      el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', text: '×',
        onclick: () => this.#dismiss(toast) }));
    if (!existing) this.#container.append(toast);
    clearTimeout(this.#timers.get(toast));
    this.#timers.set(toast, setTimeout(() => this.#dismiss(toast), SHOW_MS));
    while (this.#container.children.length > MAX_TOASTS) this.#dismiss(this.#container.firstElementChild);
  }

  #dismiss(toast) {
    clearTimeout(this.#timers.get(toast));
    this.#timers.delete(toast);
    toast.remove();
  }
}
