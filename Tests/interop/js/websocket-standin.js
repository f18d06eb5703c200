// A small WebSocket client (RFC 6455) on Node's http and crypto modules: just what engine.io-client's
// websocket transport uses from a browser WebSocket (new WebSocket(url[, protocols]), binaryType,
// readyState and its constants, onopen/onmessage/onclose/onerror, send, close) plus addEventListener and
// bufferedAmount. Node has a global WebSocket only from 22 (20.10+ and 21 behind --experimental-websocket);
// Debian 12's nodejs is 18.20.4, which has none and rejects the flag, and the npm registry (the `ws`
// package) is not available to `make deps`. installWebSocket() uses Node's own WebSocket when there is
// one, this stand-in otherwise; STICKYLAB_JS_WEBSOCKET=standin|node forces one of them.
// Speaks ws:// only, offers no extensions (so no permessage-deflate) and sends every message unfragmented;
// it takes fragmented messages, pings (answered with a pong) and the close handshake from the server.
"use strict";
const http = require("node:http");
const crypto = require("node:crypto");

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
const CLOSE_TIMEOUT_MS = 5000; // how long to wait for the server to end the TCP connection after the close handshake
const utf8 = new TextDecoder("utf-8", { fatal: true });

class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function validCloseCode(code) {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

class WebSocket {
  constructor(url, protocols = []) {
    let target;
    try {
      target = new URL(String(url));
    } catch {
      throw new DOMException(`invalid URL: ${url}`, "SyntaxError");
    }
    if (target.protocol === "http:") target.protocol = "ws:";
    if (target.protocol !== "ws:") throw new DOMException(`this stand-in speaks ws: only, not ${target.protocol}`, "SyntaxError");
    if (target.hash) throw new DOMException("a WebSocket URL has no fragment", "SyntaxError");
    const wanted = typeof protocols === "string" ? [protocols] : Array.from(protocols, String);
    if (new Set(wanted).size !== wanted.length || wanted.some((p) => !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(p))) {
      throw new DOMException(`invalid subprotocols: ${wanted.join(", ")}`, "SyntaxError");
    }

    this.url = target.href;
    this._origin = target.origin;
    this.protocol = "";
    this.extensions = "";
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this._readyState = CONNECTING;
    this._binaryType = "blob";
    this._listeners = new Map();
    this._socket = null;
    this._buffered = 0;
    this._chunks = [];
    this._chunkBytes = 0;
    this._fragments = null; // the frames of a message still being received: { opcode, parts }
    this._closeSent = false;
    this._closeReceived = null; // { code, reason } once the server's close frame is in
    this._closeTimer = null;
    this._failed = false;
    this._finished = false;

    const key = crypto.randomBytes(16).toString("base64");
    const headers = { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13" };
    if (wanted.length) headers["Sec-WebSocket-Protocol"] = wanted.join(", ");
    const request = http.request({
      method: "GET",
      hostname: target.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: target.port || 80,
      path: target.pathname + target.search,
      headers,
      agent: false,
    });
    this._request = request;
    request.on("upgrade", (response, socket, head) => {
      this._request = null;
      this._socket = socket;
      socket.on("error", (error) => {
        // After both close frames, a reset instead of a FIN changes nothing.
        if (this._closeReceived && this._closeSent) socket.destroy(); else this._fail(1006, `socket error: ${error.message}`);
      });
      socket.on("close", () => this._finish());
      socket.on("end", () => { if (!socket.writableEnded) socket.end(); });
      const problem = this._checkHandshake(response, key, wanted);
      if (problem) return this._fail(1006, problem);
      if (this._readyState !== CONNECTING) return this._fail(1006, "closed before the connection was established");
      socket.setNoDelay(true);
      socket.setTimeout(0);
      this.protocol = response.headers["sec-websocket-protocol"] || "";
      this._readyState = OPEN;
      this._dispatch("open", {});
      socket.on("data", (chunk) => this._receive(chunk));
      if (head && head.length) this._receive(head);
    });
    request.on("response", (response) => {
      response.resume();
      this._request = null;
      this._failBeforeOpen(`the server answered ${response.statusCode} ${response.statusMessage}, not 101 Switching Protocols`);
    });
    request.on("error", (error) => {
      this._request = null;
      this._failBeforeOpen(`cannot connect to ${this.url}: ${error.message}`);
    });
    request.end();
  }

  get readyState() { return this._readyState; }
  get bufferedAmount() { return this._buffered; }
  get binaryType() { return this._binaryType; }
  set binaryType(value) {
    // As in a browser, a value outside the enumeration is ignored; "nodebuffer" delivers a Buffer (as `ws` does).
    if (value === "blob" || value === "arraybuffer" || value === "nodebuffer") this._binaryType = value;
  }

  addEventListener(type, listener, options) {
    if (typeof listener !== "function" && !(listener && typeof listener.handleEvent === "function")) return;
    const list = this._listeners.get(type) || [];
    if (list.some((entry) => entry.listener === listener)) return;
    list.push({ listener, once: Boolean(options && typeof options === "object" && options.once) });
    this._listeners.set(type, list);
  }

  removeEventListener(type, listener) {
    const list = this._listeners.get(type);
    if (list) this._listeners.set(type, list.filter((entry) => entry.listener !== listener));
  }

  send(data) {
    if (this._readyState === CONNECTING) throw new DOMException("still connecting", "InvalidStateError");
    let opcode = 0x2;
    let payload;
    if (typeof data === "string") {
      opcode = 0x1;
      payload = Buffer.from(data, "utf8");
    } else if (data instanceof ArrayBuffer) {
      payload = Buffer.from(data);
    } else if (ArrayBuffer.isView(data)) {
      payload = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    } else if (typeof Blob === "function" && data instanceof Blob) {
      throw new TypeError("this stand-in does not send Blobs");
    } else {
      opcode = 0x1;
      payload = Buffer.from(String(data), "utf8");
    }
    if (this._readyState !== OPEN || this._closeSent) {
      // A browser counts data sent after close() in bufferedAmount and drops it.
      this._buffered += payload.length;
      return;
    }
    this._writeFrame(opcode, payload, true);
  }

  close(code, reason) {
    if (code !== undefined) {
      code = Number(code);
      if (code !== 1000 && !(code >= 3000 && code <= 4999)) throw new DOMException(`close code ${code} is not 1000 or 3000-4999`, "InvalidAccessError");
    }
    let reasonBytes = Buffer.alloc(0);
    if (reason !== undefined) {
      reasonBytes = Buffer.from(String(reason), "utf8");
      if (reasonBytes.length > 123) throw new DOMException("the close reason is longer than 123 bytes", "SyntaxError");
    }
    if (this._readyState === CLOSING || this._readyState === CLOSED) return;
    if (this._readyState === CONNECTING) {
      this._readyState = CLOSING;
      if (this._request) {
        this._request.destroy();
        this._request = null;
        setImmediate(() => this._failBeforeOpen("closed before the connection was established"));
      }
      return;
    }
    this._readyState = CLOSING;
    this._sendClose(code, reasonBytes);
  }

  // --- the protocol ---

  _checkHandshake(response, key, wanted) {
    const expected = crypto.createHash("sha1").update(key + GUID).digest("base64");
    const h = response.headers;
    if (response.statusCode !== 101) return `the server answered ${response.statusCode}, not 101`;
    if (String(h.upgrade || "").toLowerCase() !== "websocket") return `Upgrade is ${h.upgrade}, not websocket`;
    if (!String(h.connection || "").toLowerCase().split(/\s*,\s*/).includes("upgrade")) return `Connection is ${h.connection}, not Upgrade`;
    if (h["sec-websocket-accept"] !== expected) return `Sec-WebSocket-Accept is ${h["sec-websocket-accept"]}, expected ${expected}`;
    if (h["sec-websocket-extensions"]) return `the server chose extensions none were offered: ${h["sec-websocket-extensions"]}`;
    const protocol = h["sec-websocket-protocol"];
    if (protocol !== undefined && !wanted.includes(protocol)) return `the server chose subprotocol ${protocol}, not one of [${wanted.join(", ")}]`;
    return null;
  }

  _writeFrame(opcode, payload, fin) {
    const length = payload.length;
    const extra = length < 126 ? 0 : length < 65536 ? 2 : 8;
    const header = Buffer.alloc(2 + extra + 4);
    header[0] = (fin ? 0x80 : 0) | opcode;
    if (extra === 0) {
      header[1] = 0x80 | length;
    } else if (extra === 2) {
      header[1] = 0x80 | 126;
      header.writeUInt16BE(length, 2);
    } else {
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(length), 2);
    }
    // A client masks every frame with a fresh random key (RFC 6455 5.3).
    const mask = crypto.randomBytes(4);
    mask.copy(header, 2 + extra);
    const masked = Buffer.allocUnsafe(length);
    for (let i = 0; i < length; i++) masked[i] = payload[i] ^ mask[i & 3];
    const counted = opcode < 0x8 ? length : 0;
    this._buffered += counted;
    this._socket.write(Buffer.concat([header, masked]), () => { this._buffered -= counted; });
  }

  _sendClose(code, reasonBytes) {
    if (this._closeSent || !this._socket || this._socket.destroyed) return;
    this._closeSent = true;
    let body = Buffer.alloc(0);
    if (code !== undefined) {
      body = Buffer.alloc(2 + reasonBytes.length);
      body.writeUInt16BE(code, 0);
      reasonBytes.copy(body, 2);
    }
    this._writeFrame(0x8, body, true);
    // The server ends the TCP connection after its close frame (RFC 6455 7.1.1); do not wait forever.
    this._closeTimer = setTimeout(() => this._socket.destroy(), CLOSE_TIMEOUT_MS);
  }

  _receive(chunk) {
    if (this._closeReceived || this._failed) return;
    this._chunks.push(chunk);
    this._chunkBytes += chunk.length;
    try {
      for (;;) {
        const frame = this._takeFrame();
        if (!frame) break;
        this._handleFrame(frame);
        if (this._closeReceived || this._failed) break;
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      this._fail(error.code, error.message);
    }
  }

  _peek(count) {
    if (this._chunks[0].length < count) this._chunks = [Buffer.concat(this._chunks)];
    return this._chunks[0];
  }

  _consume(count) {
    const buffer = this._peek(count);
    const taken = buffer.subarray(0, count);
    if (buffer.length === count) this._chunks.shift(); else this._chunks[0] = buffer.subarray(count);
    this._chunkBytes -= count;
    return taken;
  }

  _takeFrame() {
    if (this._chunkBytes < 2) return null;
    let buffer = this._peek(2);
    const fin = (buffer[0] & 0x80) !== 0;
    const rsv = buffer[0] & 0x70;
    const opcode = buffer[0] & 0x0f;
    const masked = (buffer[1] & 0x80) !== 0;
    let length = buffer[1] & 0x7f;
    if (rsv) throw new ProtocolError(1002, "a reserved bit is set, and no extension was negotiated");
    if (masked) throw new ProtocolError(1002, "the server masked a frame");
    let headerLength = 2 + (length === 126 ? 2 : length === 127 ? 8 : 0);
    if (this._chunkBytes < headerLength) return null;
    buffer = this._peek(headerLength);
    if (length === 126) {
      length = buffer.readUInt16BE(2);
    } else if (length === 127) {
      const big = buffer.readBigUInt64BE(2);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(1009, `a frame of ${big} bytes`);
      length = Number(big);
    }
    if (opcode >= 0x8 && (!fin || length > 125)) throw new ProtocolError(1002, "a control frame that is fragmented or longer than 125 bytes");
    if (this._chunkBytes < headerLength + length) return null;
    this._consume(headerLength);
    const payload = length ? Buffer.from(this._consume(length)) : Buffer.alloc(0);
    return { fin, opcode, payload };
  }

  _handleFrame({ fin, opcode, payload }) {
    switch (opcode) {
      case 0x0: // continuation
        if (!this._fragments) throw new ProtocolError(1002, "a continuation frame with no message to continue");
        this._fragments.parts.push(payload);
        if (fin) {
          const { opcode: first, parts } = this._fragments;
          this._fragments = null;
          this._deliver(first, Buffer.concat(parts));
        }
        return;
      case 0x1: // text
      case 0x2: // binary
        if (this._fragments) throw new ProtocolError(1002, "a new message before the last one was complete");
        if (fin) this._deliver(opcode, payload); else this._fragments = { opcode, parts: [payload] };
        return;
      case 0x8: { // close
        let code = 1005;
        let reason = "";
        if (payload.length === 1) throw new ProtocolError(1002, "a close frame with a 1-byte body");
        if (payload.length >= 2) {
          code = payload.readUInt16BE(0);
          if (!validCloseCode(code)) throw new ProtocolError(1002, `close code ${code}`);
          try {
            reason = utf8.decode(payload.subarray(2));
          } catch {
            throw new ProtocolError(1007, "a close reason that is not UTF-8");
          }
        }
        this._closeReceived = { code, reason };
        this._readyState = CLOSING;
        this._sendClose(code === 1005 ? undefined : code, Buffer.alloc(0));
        this._socket.end();
        return;
      }
      case 0x9: // ping
        if (!this._closeSent) this._writeFrame(0xa, payload, true);
        return;
      case 0xa: // pong
        return;
      default:
        throw new ProtocolError(1002, `opcode ${opcode}`);
    }
  }

  _deliver(opcode, payload) {
    let data;
    if (opcode === 0x1) {
      try {
        data = utf8.decode(payload);
      } catch {
        throw new ProtocolError(1007, "a text message that is not UTF-8");
      }
    } else if (this._binaryType === "arraybuffer") {
      data = payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.length);
    } else if (this._binaryType === "nodebuffer") {
      data = payload;
    } else {
      data = new Blob([payload]);
    }
    // As in a browser, nothing is delivered once close() has been called.
    if (this._readyState === OPEN) this._dispatch("message", { data, origin: this._origin });
  }

  // The connection failed before it opened (refused, not 101, closed by close()).
  _failBeforeOpen(message) {
    if (this._finished) return;
    this._failed = true;
    this._dispatch("error", { message, error: new Error(message) });
    this._finish(1006, "");
  }

  // Fail the WebSocket connection (RFC 6455 7.1.7): say why in a close frame when we can, drop TCP.
  _fail(code, message) {
    if (this._failed || this._finished) return;
    this._failed = true;
    if (this._socket && !this._socket.destroyed && !this._closeSent && this._readyState === OPEN && code !== 1006) {
      this._closeSent = true;
      const body = Buffer.alloc(2);
      body.writeUInt16BE(code, 0);
      this._writeFrame(0x8, body, true);
    }
    this._readyState = CLOSING;
    this._dispatch("error", { message, error: new Error(message) });
    if (this._socket) this._socket.destroy(); else this._finish(1006, "");
  }

  _finish(code, reason) {
    if (this._finished) return;
    this._finished = true;
    clearTimeout(this._closeTimer);
    this._readyState = CLOSED;
    let wasClean = false;
    if (code === undefined) {
      const received = this._closeReceived;
      wasClean = Boolean(received && this._closeSent && !this._failed);
      code = received && !this._failed ? received.code : 1006;
      reason = received && !this._failed ? received.reason : "";
    }
    this._dispatch("close", { code, reason, wasClean });
  }

  _dispatch(type, fields) {
    const event = { type, target: this, currentTarget: this, ...fields };
    const handler = this[`on${type}`];
    const listeners = [...(this._listeners.get(type) || [])];
    if (listeners.some((entry) => entry.once)) this._listeners.set(type, (this._listeners.get(type) || []).filter((entry) => !entry.once));
    for (const call of [typeof handler === "function" ? handler : null, ...listeners.map((entry) => entry.listener)]) {
      if (!call) continue;
      try {
        if (typeof call === "function") call.call(this, event); else call.handleEvent(event);
      } catch (error) {
        // Like an EventTarget: report the exception without breaking the connection's state.
        process.nextTick(() => { throw error; });
      }
    }
  }
}

for (const [name, value] of Object.entries({ CONNECTING, OPEN, CLOSING, CLOSED })) {
  Object.defineProperty(WebSocket, name, { value, enumerable: true });
  Object.defineProperty(WebSocket.prototype, name, { value, enumerable: true });
}

// Makes globalThis.WebSocket the one to use and says which: "node" (Node's own) or "standin" (this one).
// STICKYLAB_JS_WEBSOCKET: "standin" forces the stand-in, "node" requires Node's, unset or "auto" picks.
// Call it before loading the socket.io bundle, which takes globalThis.WebSocket when it loads.
function installWebSocket(choice = process.env.STICKYLAB_JS_WEBSOCKET || "auto") {
  const native = typeof globalThis.WebSocket === "function";
  if (choice === "node") {
    if (!native) throw new Error(`STICKYLAB_JS_WEBSOCKET=node, but Node ${process.version} has no WebSocket (Node 22+, or 20.10+ with --experimental-websocket)`);
    return "node";
  }
  if (choice !== "auto" && choice !== "standin") throw new Error(`STICKYLAB_JS_WEBSOCKET=${choice}: use auto, node or standin`);
  if (choice === "auto" && native) return "node";
  Object.defineProperty(globalThis, "WebSocket", { value: WebSocket, writable: true, configurable: true, enumerable: false });
  return "standin";
}

module.exports = { WebSocket, installWebSocket };
