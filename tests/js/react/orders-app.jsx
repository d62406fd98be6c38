// The test app of tests/browser/test_client_react.py for the private hooks: useOrders and usePositions in two
// components (sharing one orders subscription), and useMarketStream beside them, on one shared TradeStream.
import React from 'react';
import { createRoot } from 'react-dom/client';
import { TradeStream } from '../../../public_html/js/client/index.js';
import { createHooks } from '../../../public_html/js/client/react.js';

const params = new URLSearchParams(location.search);
TradeStream.shared({ url: params.get('ws'), token: params.get('token') });
const { useMarketStream, useOrders, usePositions } = createHooks(React);

function Orders() {
  const { orders, events, authenticated } = useOrders();
  return (
    <section id="orders" data-authenticated={String(authenticated)} data-events={events.length}>
      {orders.map((order) => (
        <p key={order.id} className="order" data-status={order.status}>{order.side} {order.qty} {order.symbol}</p>
      ))}
    </section>
  );
}

function Positions() {
  const { positions, portfolio } = usePositions();
  const { prices } = useMarketStream(positions.map((p) => p.symbol));
  return (
    <table id="positions" data-value={portfolio.market_value}>
      <tbody>
        {positions.map((p) => (
          <tr key={`${p.account}|${p.symbol}`} data-symbol={p.symbol}>
            <td className="qty">{p.qty}</td>
            <td className="last">{prices[p.symbol]?.price ?? ''}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

createRoot(document.getElementById('root')).render(<><Orders /><Positions /></>);
