// Connection state recovery with the official client 4.8.1: a client whose transport drops comes back
// with the same id and gets the broadcasts it missed; `socket.recovered` is true.
//   node [--experimental-websocket] recovery-client.js <bundle> <url> <polling|websocket|upgrade>
// WebSocket: Node's own when it has one (22+, or 20.10+ with --experimental-websocket), else the
// stand-in in websocket-standin.js (Debian 12's Node 18); STICKYLAB_JS_WEBSOCKET=standin|node forces one.
// The JSON result says which ran ("webSocket": "node" | "standin").
"use strict";
const { XMLHttpRequest, FileReader } = require("./xhr-standin.js");
const { installWebSocket } = require("./websocket-standin.js");
globalThis.XMLHttpRequest = XMLHttpRequest;
globalThis.FileReader = FileReader;
const webSocket = installWebSocket(); // before the bundle loads: it takes globalThis.WebSocket then

const [bundle, url, mode] = process.argv.slice(2);
const io = require(bundle);
const transports = { polling: ["polling"], websocket: ["websocket"], upgrade: ["polling", "websocket"] }[mode];

function withTimeout(promise, ms, what) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))]);
}

function waitFor(emitter, event, what) {
  return withTimeout(new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), 10000, what);
}

async function main() {
  const result = { mode, webSocket, node: process.version, checks: {} };
  const a = io(url, { transports, forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
  const b = io(url, { transports: ["websocket"], forceNew: true });
  await Promise.all([waitFor(a, "connect", "a connect"), waitFor(b, "connect", "b connect")]);
  if (mode === "upgrade" && a.io.engine.transport.name !== "websocket") await waitFor(a.io.engine, "upgrade", "upgrade");
  const firstId = a.id;
  const seen = [];
  a.on("broadcast", (text) => seen.push(text));

  b.emit("broadcast", "first");
  await withTimeout(new Promise((resolve) => { const check = () => (seen.includes("first") ? resolve() : setTimeout(check, 10)); check(); }), 10000, "first");
  result.checks.firstNotRecovered = a.recovered === false;

  const gone = waitFor(a, "disconnect", "a disconnect");
  a.io.engine.close();
  await gone;
  b.emit("broadcast", "second");
  b.emit("broadcast", "third");
  await waitFor(a, "connect", "a reconnect");
  await withTimeout(new Promise((resolve) => { const check = () => (seen.includes("third") ? resolve() : setTimeout(check, 10)); check(); }), 10000, "replay");

  result.checks.recovered = a.recovered === true;
  result.checks.sameId = a.id === firstId;
  result.checks.replayedInOrder = JSON.stringify(seen) === JSON.stringify(["first", "second", "third"]);
  result.seen = seen;
  a.disconnect();
  b.disconnect();
  result.ok = Object.values(result.checks).every(Boolean);
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}

main().catch((error) => {
  console.log(JSON.stringify({ mode, webSocket, node: process.version, ok: false, error: String(error && error.stack || error) }));
  process.exit(1);
});
