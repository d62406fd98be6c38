"""alpaca-py's own stream clients, driven inside the test's event loop (the only supported way is the private
``_run_forever``), yielding a queue of what their handlers received."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from alpaca.data.live import StockDataStream
from alpaca.trading.stream import TradingStream


@contextlib.asynccontextmanager
async def _driven(stream: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(stream._run_forever())
    try:
        yield
    finally:
        await stream.stop_ws()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stream.close()


@contextlib.asynccontextmanager
async def stock_stream(url: str, key: str, secret: str, *symbols: str) -> AsyncIterator[tuple[Any, asyncio.Queue]]:
    """A StockDataStream subscribed to trades of ``symbols``; yields (stream, queue of Trade models)."""
    stream = StockDataStream(key, secret, url_override=url)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def on_trade(trade: Any) -> None:
        got.put_nowait(trade)

    stream.subscribe_trades(on_trade, *symbols)
    async with _driven(stream):
        yield stream, got


@contextlib.asynccontextmanager
async def trading_stream(url: str, key: str, secret: str) -> AsyncIterator[asyncio.Queue]:
    """A TradingStream listening to trade updates; yields the queue of TradeUpdate models."""
    stream = TradingStream(key, secret, paper=True, url_override=url)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def on_update(update: Any) -> None:
        got.put_nowait(update)

    stream.subscribe_trade_updates(on_update)
    async with _driven(stream):
        yield got


@contextlib.asynccontextmanager
async def crypto_stream(url: str, key: str, secret: str, *symbols: str) -> AsyncIterator[tuple[Any, asyncio.Queue]]:
    """A CryptoDataStream subscribed to trades and order books of ``symbols``; yields (stream, queue of models)."""
    from alpaca.data.live import CryptoDataStream

    stream = CryptoDataStream(key, secret, url_override=url)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def on_data(item: Any) -> None:
        got.put_nowait(item)

    stream.subscribe_trades(on_data, *symbols)
    stream.subscribe_orderbooks(on_data, *symbols)
    async with _driven(stream):
        yield stream, got


@contextlib.asynccontextmanager
async def news_stream(url: str, key: str, secret: str, *symbols: str) -> AsyncIterator[tuple[Any, asyncio.Queue]]:
    """A NewsDataStream subscribed to news of ``symbols`` (or ``*``); yields (stream, queue of News models)."""
    from alpaca.data.live import NewsDataStream

    stream = NewsDataStream(key, secret, url_override=url)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def on_news(item: Any) -> None:
        got.put_nowait(item)

    stream.subscribe_news(on_news, *symbols)
    async with _driven(stream):
        yield stream, got


@contextlib.asynccontextmanager
async def option_stream(url: str, key: str, secret: str, *symbols: str) -> AsyncIterator[tuple[Any, asyncio.Queue]]:
    """An OptionDataStream (msgpack, as alpaca-py always speaks) subscribed to trades and quotes of ``symbols``;
    yields (stream, queue of Trade and Quote models)."""
    from alpaca.data.live import OptionDataStream

    stream = OptionDataStream(key, secret, url_override=url)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def on_data(item: Any) -> None:
        got.put_nowait(item)

    stream.subscribe_trades(on_data, *symbols)
    stream.subscribe_quotes(on_data, *symbols)
    async with _driven(stream):
        yield stream, got
