// Keyboard shortcuts: / adds a symbol, ↑/↓ move between rows (Alt+↑/↓ moves the row), Enter opens the chart,
// Delete removes, t toggles the theme, o jumps to the orders, ? shows this help.

export const SHORTCUTS = [
  ['/', 'add a symbol'], ['↑ ↓', 'previous / next symbol'], ['Alt+↑ ↓', 'move the symbol up / down'],
  ['Enter', 'show its chart and trades'], ['Delete', 'remove the symbol'], ['t', 'light / dark theme'],
  ['o', 'go to the orders panel'], ['?', 'this help'], ['Esc', 'close help, leave the input'],
];

export function bindKeys(document, { market, watchlist, symbolInput, theme, removeSymbol }) {
  const help = document.getElementById('help');
  const rowOf = (node) => node?.closest?.('tr.wl-row');
  document.getElementById('help-button').addEventListener('click', () => toggleHelp());
  document.getElementById('help-close').addEventListener('click', () => toggleHelp(false));

  function toggleHelp(open = help.hidden) {
    help.hidden = !open;
    if (open) document.getElementById('help-close').focus();
  }

  document.addEventListener('keydown', (event) => {
    const target = event.target;
    const typing = target.matches?.('input, textarea, select');
    if (event.key === 'Escape') {
      if (!help.hidden) toggleHelp(false);
      else if (typing) target.blur();
      return;
    }
    if (typing || event.ctrlKey || event.metaKey) return;
    const row = rowOf(target);
    const symbols = watchlist.symbols();
    switch (event.key) {
      case '/':
        event.preventDefault();
        symbolInput.focus();
        break;
      case '?':
        event.preventDefault();
        toggleHelp();
        break;
      case 't':
        theme.toggle();
        break;
      case 'o':
        document.getElementById('orders-panel').focus();
        document.body.dataset.view = 'orders';
        break;
      case 'ArrowDown':
      case 'ArrowUp': {
        const delta = event.key === 'ArrowDown' ? 1 : -1;
        if (row && event.altKey) {
          event.preventDefault();
          watchlist.move(row.dataset.symbol, delta);
          break;
        }
        if (!symbols.length) break;
        event.preventDefault();
        const index = row ? symbols.indexOf(row.dataset.symbol) + delta : (delta > 0 ? 0 : symbols.length - 1);
        const next = symbols[Math.max(0, Math.min(symbols.length - 1, index))];
        watchlist.row(next)?.element.focus();
        market.select(next);
        break;
      }
      case 'Enter':
        if (row) market.select(row.dataset.symbol);
        break;
      case 'Delete':
      case 'Backspace':
        if (row) {
          event.preventDefault();
          removeSymbol(row.dataset.symbol);
        }
        break;
      default:
    }
  });
}
