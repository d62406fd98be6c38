"""``trade-stream bench auth``: what one credential check costs with 1 and with 10,000 users in the users file.

The check is ``Identity.resolve``, the one every path calls (WebSocket ``auth``, Bearer headers, the compatible
endpoints), run here in this process on a users file written for the run, for each size and each token format:
``id`` (``tsu_<id>_<secret>``, what ``trade-stream user add`` issues) and ``legacy`` (tokens without an id, from
older users files). Each check comes from its own source address so the failed-auth throttle never answers for
it, except in the ``throttled source`` case, which is one address already over its limit. Reported per case: the
median and p99 of the wall time of one check, and the token hashes it computed (``Identity.token_hashes``).
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from trade_stream.bench import report
from trade_stream.edges.identity import Identity, hash_token, new_token, write_users
from trade_stream.records.users import UserRecord

ACCOUNT = "default"
FLOOD = 200  # wrong tokens sent from the throttled source first: past its limit of 100 a minute


def users_file(path: Path, n: int, with_ids: bool) -> list[str]:
    """Write ``n`` users; their tokens, in order."""
    tokens, records = [], []
    for i in range(n):
        if with_ids:
            token_id, token = new_token()
        else:
            token_id, token = "", secrets.token_urlsafe(32)
        tokens.append(token)
        records.append(UserRecord(f"u{i}", hash_token(token), (ACCOUNT,), False, token_id))
    write_users(str(path), records)
    return tokens


def measure(identity: Identity, credentials: list[str], sources: list[str]) -> dict[str, Any]:
    times, before = [], identity.token_hashes
    for credential, source in zip(credentials, sources, strict=True):
        start = time.perf_counter_ns()
        identity.resolve(credential, source)
        times.append(time.perf_counter_ns() - start)
    times.sort()
    return {"median_us": round(statistics.median(times) / 1000, 2),
            "p99_us": round(times[int(len(times) * 0.99)] / 1000, 2),
            "hashes_per_check": round((identity.token_hashes - before) / len(credentials), 2)}


def run(sizes: list[int], checks: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fresh = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(checks)]
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        for n in sizes:
            for fmt in ("id", "legacy"):
                path = Path(tmp) / f"users-{n}-{fmt}.toml"
                tokens = users_file(path, n, fmt == "id")
                identity = Identity("", [ACCOUNT], users_file=str(path))
                right = tokens[len(tokens) // 2]
                guess = [f"tsu_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}" if fmt == "id" else
                         secrets.token_urlsafe(32) for _ in range(checks)]
                cases = {"right token": measure(identity, [right] * checks, fresh),
                         "wrong token": measure(identity, guess, fresh)}
                flooded = f"192.0.2.{len(rows) % 250 + 1}"
                for _ in range(FLOOD):  # take this address over its per-source limit, just before its case
                    identity.resolve(secrets.token_urlsafe(32), flooded)
                cases["wrong token, throttled source"] = measure(identity, guess, [flooded] * checks)
                rows += [{"users": n, "format": fmt, "case": case, **numbers} for case, numbers in cases.items()]
    return rows


def text_report(header: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"trade-stream bench auth: {header['checks']} checks per case, in-process Identity.resolve",
             "machine: {cpu_model}, {nproc} cores, Python {python}".format(**header["machine"]), "",
             f"{'users':>6}  {'format':7} {'case':30} {'median µs':>10} {'p99 µs':>9} {'hashes/check':>13}"]
    for r in rows:
        lines.append(f"{r['users']:>6}  {r['format']:7} {r['case']:30} {r['median_us']:>10.2f} {r['p99_us']:>9.2f} "
                     f"{r['hashes_per_check']:>13.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trade-stream bench auth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", default="1,10000", help="comma list of users-file sizes (default 1,10000)")
    p.add_argument("--checks", type=int, default=500, help="checks per case (default 500)")
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    args = p.parse_args(argv)
    try:
        sizes = [int(n) for n in args.users.split(",") if n.strip()]
    except ValueError:
        p.error("--users must be a comma list of whole numbers")
    if not sizes or min(sizes) < 1 or args.checks < 1:
        p.error("--users needs sizes of at least 1 and --checks at least 1")
    logging.getLogger("trade_stream.edges.identity").setLevel(logging.ERROR)  # one warning per wrong token
    rows = run(sizes, args.checks)
    header = {"scenario": "auth", "checks": args.checks, "machine": report.machine()}
    print(json.dumps({**header, "runs": rows}, indent=2) if args.json else text_report(header, rows))
    return 0
