// A React app on trade-stream's browser client: live prices for AAPL and MSFT from useMarketStream.
// React 18 or 19 from npm, bundled with the client: npx esbuild app.jsx --bundle --format=esm --outfile=app.js
// then open index.html?ws=ws://localhost:8765/ (any static server; the relay must allow the page's origin).
import React from 'react';
import { createRoot } from 'react-dom/client';
import { TradeStream } from '../../../public_html/js/client/index.js';
import { createHooks } from '../../../public_html/js/client/react.js';

// One socket for the whole app: every hook below subscribes through it.
TradeStream.shared({ url: new URLSearchParams(location.search).get('ws') ?? 'ws://localhost:8765/' });
const { useMarketStream } = createHooks(React);

function LivePrices({ symbols }) {
  const { prices, connected, error } = useMarketStream(symbols);
  return (
    <section>
      <p id="status">{connected ? 'LIVE' : (error ?? 'connecting…')}</p>
      <table>
        <thead><tr><th>Symbol</th><th>Last</th><th>Bid</th><th>Ask</th></tr></thead>
        <tbody>
          {symbols.map((symbol) => (
            <tr key={symbol} data-symbol={symbol}>
              <th>{symbol}</th>
              <td className="price">{prices[symbol]?.price?.toFixed(2) ?? '—'}</td>
              <td className="bid">{prices[symbol]?.bid?.toFixed(2) ?? ''}</td>
              <td className="ask">{prices[symbol]?.ask?.toFixed(2) ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p id="react-version">React {React.version}</p>
    </section>
  );
}

createRoot(document.getElementById('root')).render(<LivePrices symbols={['AAPL', 'MSFT']} />);
