// Verifies webhook deliveries with the standardwebhooks package, as a receiver written in JS would.
// Reads one JSON object per stdin line: {"secret", "raw": bool, "headers": {...}, "body": "<the raw body>"};
// "raw" passes a secret that is not whsec_<base64> as its bytes ({format: "raw"}).
// Prints one JSON line per input: {"ok": true, "payload": <parsed body>} or {"ok": false, "error": "..."}.
const readline = require("readline");
const { Webhook } = require("standardwebhooks");

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const { secret, raw, headers, body } = JSON.parse(line);
  try {
    const hook = raw ? new Webhook(secret, { format: "raw" }) : new Webhook(secret);
    process.stdout.write(JSON.stringify({ ok: true, payload: hook.verify(body, headers) }) + "\n");
  } catch (err) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(err.message || err) }) + "\n");
  }
});
