// Collects incoming items and hands them over in one batch, in an animation frame at most every
// minIntervalMs: a busy feed then costs a few renders a second, not one per display frame (each render
// is a style, layout and paint pass of the whole page). Animation frames stop in background tabs, so a
// timer and a size limit also flush, keeping memory bounded.

export class FrameQueue {
  #items = [];
  #frame = 0;
  #wait = 0;
  #timer = 0;
  #handle;
  #maxItems;
  #maxDelayMs;
  #minIntervalMs;
  #flushedAt = -Infinity;

  /** handle(items) receives everything queued since the last flush, oldest first. */
  constructor(handle, { maxItems = 2000, maxDelayMs = 250, minIntervalMs = 0 } = {}) {
    this.#handle = handle;
    this.#maxItems = maxItems;
    this.#maxDelayMs = maxDelayMs;
    this.#minIntervalMs = minIntervalMs;
  }

  push(item) {
    this.#items.push(item);
    if (this.#items.length >= this.#maxItems) {
      this.flush();
    } else if (!this.#frame && !this.#wait) {
      const wait = this.#flushedAt + this.#minIntervalMs - performance.now();
      if (wait > 0) {
        this.#wait = setTimeout(() => {
          this.#wait = 0;
          this.#schedule();
        }, wait);
      } else {
        this.#schedule();
      }
    }
  }

  flush() {
    cancelAnimationFrame(this.#frame);
    clearTimeout(this.#timer);
    clearTimeout(this.#wait);
    this.#frame = this.#timer = this.#wait = 0;
    const items = this.#items;
    if (!items.length) return;
    this.#items = [];
    this.#flushedAt = performance.now();
    this.#handle(items);
  }

  #schedule() {
    this.#frame = requestAnimationFrame(() => this.flush());
    this.#timer = setTimeout(() => this.flush(), this.#maxDelayMs);
  }
}
