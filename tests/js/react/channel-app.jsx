// The test app of tests/browser/test_client_react.py for useChannel: the last events of strategies:abc.
import React from 'react';
import { createRoot } from 'react-dom/client';
import { TradeStream } from '../../../public_html/js/client/index.js';
import { createHooks } from '../../../public_html/js/client/react.js';

const params = new URLSearchParams(location.search);
TradeStream.shared({ url: params.get('ws'), token: params.get('token') });
const { useChannel } = createHooks(React);

function Strategy({ id }) {
  const { events, last, error } = useChannel(`strategies:${id}`, { limit: 3 });
  return (
    <section id="strategy" data-count={events.length} data-last={last?.data?.n ?? ''} data-error={error ?? ''}>
      {events.map((event) => <p key={event.id} className="event">{event.data.n}</p>)}
    </section>
  );
}

createRoot(document.getElementById('root')).render(<Strategy id="abc" />);
