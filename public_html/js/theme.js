// Light or dark: the system's choice (prefers-color-scheme) until the toggle picks one, which is remembered.
import { local } from './storage.js';
import { resetSparklineColours } from './sparkline.js';

const KEY = 'tradeStream.theme';

export function bindTheme(button, onChange) {
  const media = window.matchMedia('(prefers-color-scheme: light)');
  const current = () => document.documentElement.dataset.theme;
  const apply = (theme) => {
    document.documentElement.dataset.theme = theme;
    button.textContent = theme === 'light' ? '☾ Dark' : '☀ Light';
    button.setAttribute('aria-label', `Switch to the ${theme === 'light' ? 'dark' : 'light'} theme`);
    resetSparklineColours();
    onChange();
  };
  apply(local.get(KEY) ?? (media.matches ? 'light' : 'dark'));
  media.addEventListener('change', () => {
    if (!local.get(KEY)) apply(media.matches ? 'light' : 'dark');
  });
  const toggle = () => {
    const next = current() === 'light' ? 'dark' : 'light';
    local.set(KEY, next);
    apply(next);
  };
  button.addEventListener('click', toggle);
  return { toggle };
}
