// The page's service worker: shows a Web Push message from trade-stream as a notification, and on a click
// focuses an open tab of the page (or opens one). It lives next to index.html so that its scope is the page's
// own directory: `/` when the daemon serves the page, `/trade-stream/` behind the Apache prefix.
//
// A message is the JSON edges/push.py sends: {title, body, tag, id, type, level, account, symbol, trade_id, …}.
// The tag is the one the page gives its own desktop alert of that notification, so it is shown once.

const SCOPE = self.registration.scope;

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

/** A push message's fields, whatever arrived: JSON, plain text, or nothing. */
function read(data) {
  if (!data) return {};
  try {
    const parsed = data.json();
    return parsed && typeof parsed === 'object' ? parsed : { body: String(parsed) };
  } catch {
    return { body: data.text() };
  }
}

/** The notification a message is shown as; a click goes only to a URL within the page's scope. */
function display(message) {
  const url = new URL(typeof message.url === 'string' ? message.url : './', SCOPE);
  const sameSite = url.href.startsWith(SCOPE);
  return {
    title: message.title || 'trade-stream',
    options: {
      body: message.body || '',
      tag: message.tag || 'trade-stream',
      icon: new URL('favicon.svg', SCOPE).href,
      data: {
        url: sameSite ? url.href : SCOPE, // never a click that leaves the page's own site
        id: message.id ?? null, type: message.type ?? null, trade_id: message.trade_id ?? null,
      },
    },
  };
}

self.addEventListener('push', (event) => {
  const { title, options } = display(read(event.data));
  event.waitUntil(self.registration.showNotification(title, options));
});

/** Focus a tab of the page that is already open (telling it what was clicked), else open one at the URL. */
async function openPage(data) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((client) => client.url.startsWith(SCOPE));
  if (open) {
    open.postMessage({ type: 'notification-click', data });
    return open.focus();
  }
  return self.clients.openWindow(data.url || SCOPE);
}

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(openPage(event.notification.data || {}));
});
