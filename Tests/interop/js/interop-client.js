// Runs the official socket.io client 4.8.1 (the browser bundle, unchanged) in Node against a server:
//   node [--experimental-websocket] interop-client.js <bundle> <url> <polling|websocket|upgrade> [count]
// WebSocket: Node's own when it has one (22+, or 20.10+ with --experimental-websocket), else the
// stand-in in websocket-standin.js (Debian 12's Node 18); STICKYLAB_JS_WEBSOCKET=standin|node forces one.
// The JSON result says which ran ("webSocket": "node" | "standin").
// Prints one JSON line with what it saw; exits 0 when every check passed.
"use strict";
const { XMLHttpRequest, FileReader } = require("./xhr-standin.js");
const { installWebSocket } = require("./websocket-standin.js");
globalThis.XMLHttpRequest = XMLHttpRequest;
globalThis.FileReader = FileReader;
const webSocket = installWebSocket(); // before the bundle loads: it takes globalThis.WebSocket then

const [bundle, url, mode, countText] = process.argv.slice(2);
const io = require(bundle);
const count = Number(countText || 1000);
const transports = { polling: ["polling"], websocket: ["websocket"], upgrade: ["polling", "websocket"] }[mode];
if (!transports) {
  console.error(`unknown mode ${mode}: use polling, websocket or upgrade`);
  process.exit(2);
}

function withTimeout(promise, ms, what) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))]);
}

function connect(auth) {
  return io(url, { transports, auth, reconnection: false, forceNew: true });
}

async function main() {
  const result = { mode, webSocket, node: process.version, checks: {} };
  const socket = connect({ token: "good" });
  await withTimeout(new Promise((resolve, reject) => {
    socket.on("connect", resolve);
    socket.on("connect_error", reject);
  }), 10000, "connect");
  result.checks.connected = socket.connected && typeof socket.id === "string";

  if (mode === "upgrade") {
    if (socket.io.engine.transport.name !== "websocket") {
      await withTimeout(new Promise((resolve) => socket.io.engine.once("upgrade", resolve)), 10000, "upgrade");
    }
  }

  // 1,000 messages out and back, in order.
  const received = [];
  const allBack = new Promise((resolve) => {
    socket.on("echo", (value) => {
      received.push(value);
      if (received.length === count) resolve();
    });
  });
  for (let i = 0; i < count; i++) socket.emit("echo", { seq: i, text: `message ${i}` });
  await withTimeout(allBack, 30000, `${count} echoes`);
  result.checks.inOrder = received.every((value, index) => value.seq === index && value.text === `message ${index}`);

  // Acknowledgements, both ways.
  const ack = await withTimeout(socket.emitWithAck("echo-ack", "ping", 42), 10000, "ack");
  result.checks.clientAck = JSON.stringify(ack) === JSON.stringify("ping");
  socket.on("emit-with-ack", (...args) => {
    const callback = typeof args[args.length - 1] === "function" ? args.pop() : null;
    if (callback) callback("answer", ...args);
  });
  const serverAck = new Promise((resolve) => {
    socket.on("emit-with-ack", (...args) => {
      if (typeof args[args.length - 1] !== "function") resolve(args);
    });
  });
  socket.emit("emit-with-ack", "question");
  const serverAckArgs = await withTimeout(serverAck, 10000, "server ack");
  result.checks.serverAck = JSON.stringify(serverAckArgs) === JSON.stringify(["answer", "question"]);

  // A binary payload out and back (as an event and as an ack).
  const bytes = Uint8Array.from([0, 1, 2, 253, 254, 255]);
  const binaryBack = new Promise((resolve) => socket.once("echo", resolve));
  socket.emit("echo", { name: "file", data: bytes });
  const echoed = await withTimeout(binaryBack, 10000, "binary echo");
  const echoedBytes = new Uint8Array(echoed.data);
  result.checks.binaryEvent = echoed.name === "file" && echoedBytes.length === bytes.length && echoedBytes.every((b, i) => b === bytes[i]);
  const binaryAck = await withTimeout(socket.emitWithAck("echo-ack", bytes), 10000, "binary ack");
  const ackBytes = new Uint8Array(binaryAck);
  result.checks.binaryAck = ackBytes.length === bytes.length && ackBytes.every((b, i) => b === bytes[i]);
  result.transport = socket.io.engine.transport.name;
  socket.disconnect();

  // Refused by the server's auth hook, with a readable message.
  const refused = connect({ token: "bad" });
  const error = await withTimeout(new Promise((resolve) => {
    refused.on("connect_error", resolve);
    refused.on("connect", () => resolve(new Error("connected although refused")));
  }), 10000, "refusal");
  result.checks.refusedWithMessage = error.message === "not authorized";
  result.refusalMessage = error.message;
  refused.close();

  result.ok = Object.values(result.checks).every(Boolean);
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}

main().catch((error) => {
  console.log(JSON.stringify({ mode, webSocket, node: process.version, ok: false, error: String(error && error.stack || error) }));
  process.exit(1);
});
