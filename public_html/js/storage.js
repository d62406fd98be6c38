// JSON values in localStorage / sessionStorage. Storage can be disabled or full; the page then simply
// forgets between reloads instead of failing.

function jsonStore(getStorage) {
  return {
    get(key) {
      try {
        const raw = getStorage().getItem(key);
        return raw === null ? null : JSON.parse(raw);
      } catch {
        return null;
      }
    },
    set(key, value) {
      try {
        getStorage().setItem(key, JSON.stringify(value));
      } catch {
        // not persisted; nothing else to do
      }
    },
    remove(key) {
      try {
        getStorage().removeItem(key);
      } catch {
        // nothing stored to remove
      }
    },
  };
}

export const local = jsonStore(() => window.localStorage);
export const session = jsonStore(() => window.sessionStorage);
