// Collects incoming items and hands them over in one batch per animation frame. Animation frames stop
// in background tabs, so a timer and a size limit also flush, keeping memory bounded.

export class FrameQueue {
  #items = [];
  #frame = 0;
  #timer = 0;
  #handle;
  #maxItems;
  #maxDelayMs;

  /** handle(items) receives everything queued since the last flush, oldest first. */
  constructor(handle, { maxItems = 2000, maxDelayMs = 250 } = {}) {
    this.#handle = handle;
    this.#maxItems = maxItems;
    this.#maxDelayMs = maxDelayMs;
  }

  push(item) {
    this.#items.push(item);
    if (this.#items.length >= this.#maxItems) {
      this.flush();
    } else if (!this.#frame) {
      this.#frame = requestAnimationFrame(() => this.flush());
      this.#timer = setTimeout(() => this.flush(), this.#maxDelayMs);
    }
  }

  flush() {
    cancelAnimationFrame(this.#frame);
    clearTimeout(this.#timer);
    this.#frame = this.#timer = 0;
    const items = this.#items;
    if (!items.length) return;
    this.#items = [];
    this.#handle(items);
  }
}
