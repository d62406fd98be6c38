// The symbol entry: validates what was typed and hands over the symbols to open.
import { isValidSymbol, splitSymbols } from './symbols.js';

export function bindSymbolForm({ form, input, message }, onSymbols) {
  const showError = (text) => {
    message.textContent = text;
    input.setAttribute('aria-invalid', 'true');
  };
  const clearError = () => {
    message.textContent = '';
    input.removeAttribute('aria-invalid');
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const symbols = splitSymbols(input.value);
    if (!symbols.length) {
      showError('Type a symbol, for example AAPL.');
      return;
    }
    const invalid = symbols.find((symbol) => !isValidSymbol(symbol));
    if (invalid) {
      showError(`“${invalid}” is not a symbol: use 1–15 letters, digits, “.”, “/” or “-”.`);
      return;
    }
    clearError();
    input.value = '';
    onSymbols(symbols);
  });
  input.addEventListener('input', clearError);

  return { showError };
}
