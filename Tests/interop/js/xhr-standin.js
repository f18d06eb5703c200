// A small XMLHttpRequest stand-in on Node's http module: just what engine.io-client's long-polling
// transport uses (open, setRequestHeader, send, abort, readyState, status, responseText,
// onreadystatechange/onload/onerror, withCredentials, timeout, getResponseHeader).
// Node sends no Content-Length on a body written in chunks; the server needs one, so we set it.
"use strict";
const http = require("node:http");

class XMLHttpRequest {
  constructor() {
    this.readyState = 0;
    this.status = 0;
    this.responseText = "";
    this.withCredentials = false;
    this.timeout = 0;
    this.onreadystatechange = null;
    this.onload = null;
    this.onerror = null;
    this._headers = {};
    this._responseHeaders = {};
    this._request = null;
  }

  open(method, url) {
    this._method = method;
    this._url = new URL(url);
    this._setState(1);
  }

  setRequestHeader(name, value) {
    this._headers[name] = value;
  }

  getResponseHeader(name) {
    const value = this._responseHeaders[name.toLowerCase()];
    return value === undefined ? null : String(value);
  }

  getAllResponseHeaders() {
    return Object.entries(this._responseHeaders).map(([k, v]) => `${k}: ${v}`).join("\r\n");
  }

  send(body) {
    const headers = { ...this._headers };
    let payload = null;
    if (body !== undefined && body !== null) {
      payload = typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
      headers["Content-Length"] = String(payload.length);
    }
    const request = http.request(
      {
        method: this._method,
        hostname: this._url.hostname,
        port: this._url.port,
        path: this._url.pathname + this._url.search,
        headers,
        agent: false,
      },
      (response) => {
        this.status = response.statusCode;
        this._responseHeaders = response.headers;
        this._setState(2);
        const chunks = [];
        response.on("data", (chunk) => chunks.push(chunk));
        response.on("end", () => {
          this.responseText = Buffer.concat(chunks).toString("utf8");
          this._setState(4);
          if (this.onload) this.onload();
        });
        response.on("error", (error) => this._fail(error));
      }
    );
    if (this.timeout) request.setTimeout(this.timeout, () => request.destroy(new Error("timeout")));
    request.on("error", (error) => this._fail(error));
    this._request = request;
    if (payload) request.write(payload);
    request.end();
  }

  abort() {
    if (this._request) this._request.destroy();
    this._request = null;
  }

  _fail(error) {
    if (this.readyState === 4) return;
    this.status = 0;
    this._setState(4);
    if (this.onerror) this.onerror(error);
  }

  _setState(state) {
    this.readyState = state;
    if (this.onreadystatechange) this.onreadystatechange();
  }
}

// engine.io-client base64-encodes binary packets for long-polling with FileReader.readAsDataURL.
class FileReader {
  constructor() {
    this.result = null;
    this.onload = null;
  }

  readAsDataURL(blob) {
    blob.arrayBuffer().then((buffer) => {
      this.result = `data:${blob.type || "application/octet-stream"};base64,${Buffer.from(buffer).toString("base64")}`;
      if (this.onload) this.onload();
    });
  }
}

module.exports = { XMLHttpRequest, FileReader };
