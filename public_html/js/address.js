// Removes a parameter from the page address (query or fragment) without reloading, keeping the rest
// exactly as it was written.

/** part: 'search' or 'hash'. */
export function dropAddressParam(location, history, part, name) {
  const kept = location[part].slice(1).split('&')
    .filter((pair) => pair && safeDecode(pair.split('=')[0]) !== name)
    .join('&');
  const parts = { search: location.search, hash: location.hash };
  parts[part] = kept ? `${part === 'search' ? '?' : '#'}${kept}` : '';
  history.replaceState(history.state, '', `${location.pathname}${parts.search}${parts.hash}`);
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return text;
  }
}
