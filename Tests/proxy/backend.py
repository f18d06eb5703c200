"""A small HTTP/1.1 app instance for sticky-proxy's tests, on asyncio streams so that tests control
every byte: it reports which instance served, and on request sets cookies, waits, answers any status,
dies mid-response, closes or resets before answering, streams, accepts or declines upgrades, echoes
WebSocket frames and raw upgraded bytes.

    python backend.py --port 9001 --instance-id <guid> --index 0

Query parameters of any request:
  set_cookie=<Set-Cookie value>   (repeatable)   header=<Name: value> (repeatable)
  delay=<seconds>                 status=<code>   close=1 (Connection: close)
  hold_on=<instance id>: that instance waits for GET /__release first (before close_on / reset_on)
  close_on=<instance id> / reset_on=<instance id>: that instance closes / resets before answering
  chunked=1 (chunked body)        nolength=1 (no Content-Length, close after the body)
Special paths:
  /__die_mid_response   head with Content-Length 100000, 100 bytes, then close
  /__close_before_response   read the request, close without answering
  /__reset_before_response   read the request, reset the connection (RST)
  /__bare_lf_response   a response head with bare LF line ends, the connection kept open
  /__stats              counts: requests, connections, open connections
  /__release            lets the held requests go on (those held now and those to come)
  /__big?size=N         N bytes of a fixed pattern
  /__decline (upgrade)  answers 403 instead of switching protocols
  /__raw (Upgrade: echo)  101, then "hello-from-backend\\n" in the same write, then echoes bytes
  any other upgrade with Upgrade: websocket  WebSocket echo
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import socket
import struct
import sys
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Backend:
    def __init__(self, instance_id: str, index: str, app_id: str):
        self.instance_id = instance_id
        self.index = index
        self.app_id = app_id
        self.requests = 0
        self.connections = 0
        self.open_connections = 0
        self.released = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        self.open_connections += 1
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    return
                method, target, version, headers = head
                self.requests += 1
                if not await self.handle(reader, writer, method, target, version, headers):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_connections -= 1
            try:
                writer.close()
            except Exception:
                pass

    async def handle(self, reader, writer, method, target, version, headers) -> bool:
        """Answers one request; returns False when the connection must end."""
        url = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        path = url.path
        connection_tokens = [t.strip().lower() for h in headers.get("connection", []) for t in h.split(",")]
        upgrade = headers.get("upgrade", [None])[0]
        if upgrade and "upgrade" in connection_tokens:
            return await self.handle_upgrade(reader, writer, path, upgrade, headers)

        if headers.get("expect", [""])[0].lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await read_body(reader, headers)

        if path == "/__release":
            self.released.set()
        elif query.get("hold_on", [None])[0] == self.instance_id:  # first: with reset_on, the reset comes once released
            await self.released.wait()
        if query.get("close_on", [None])[0] == self.instance_id:
            path = "/__close_before_response"
        if query.get("reset_on", [None])[0] == self.instance_id:
            path = "/__reset_before_response"
        if path == "/__close_before_response":
            writer.close()
            return False
        if path == "/__reset_before_response":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if path == "/__bare_lf_response":
            writer.write(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok")
            await writer.drain()
            await reader.read()  # until the proxy drops the connection: no EOF to frame the answer
            writer.close()
            return False
        if path == "/__die_mid_response":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 100)
            await writer.drain()
            writer.close()
            return False

        if "delay" in query:
            await asyncio.sleep(float(query["delay"][0]))

        status = int(query.get("status", ["200"])[0])
        extra = [("X-Backend-Instance", self.instance_id), ("X-Backend-Index", self.index)]
        for cookie in query.get("set_cookie", []):
            extra.append(("Set-Cookie", cookie))
        for header in query.get("header", []):
            name, _, value = header.partition(":")
            extra.append((name.strip(), value.strip()))

        if path == "/__stats":
            payload = json.dumps({"requests": self.requests, "connections": self.connections,
                                  "open_connections": self.open_connections}).encode()
        elif path == "/__big":
            size = int(query.get("size", ["1048576"])[0])
            pattern = bytes(range(256))
            payload = (pattern * (size // 256 + 1))[:size]
        else:
            payload = json.dumps({
                "instance_id": self.instance_id, "index": self.index, "method": method, "path": path,
                "target": target, "headers": {k: v for k, v in headers.items()}, "body_length": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(), "version": version,
            }).encode()
            extra.append(("Content-Type", "application/json"))

        close = query.get("close", ["0"])[0] == "1" or "close" in connection_tokens or version == "HTTP/1.0"
        lines = [f"HTTP/1.1 {status} {reason(status)}"]
        lines += [f"{name}: {value}" for name, value in extra]
        no_body = method == "HEAD" or status in (204, 304)
        if query.get("nolength", ["0"])[0] == "1":
            lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            if not no_body:
                writer.write(payload)
            await writer.drain()
            writer.close()
            return False
        if query.get("chunked", ["0"])[0] == "1":
            lines.append("Transfer-Encoding: chunked")
            if close:
                lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            if not no_body:
                for start in range(0, len(payload), 7):
                    piece = payload[start:start + 7]
                    writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                writer.write(b"0\r\n\r\n")
        else:
            lines.append(f"Content-Length: {len(payload)}")
            if close:
                lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            if not no_body:
                writer.write(payload)
        await writer.drain()
        return not close

    async def handle_upgrade(self, reader, writer, path, upgrade, headers) -> bool:
        if path == "/__decline":
            payload = b"upgrade declined"
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\nX-Backend-Instance: %s\r\n\r\n%s"
                         % (len(payload), self.instance_id.encode(), payload))
            await writer.drain()
            return True
        if upgrade.lower() == "echo":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
                         b"X-Backend-Instance: " + self.instance_id.encode() + b"\r\n\r\nhello-from-backend\n")
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    return False
                writer.write(data)
                await writer.drain()
        if upgrade.lower() != "websocket":
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return True
        key = headers.get("sec-websocket-key", [""])[0]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\nX-Backend-Instance: {self.instance_id}\r\n\r\n").encode())
        await writer.drain()
        while True:
            frame = await read_ws_frame(reader)
            if frame is None:
                return False
            opcode, payload = frame
            if opcode == 0x8:  # close
                writer.write(ws_frame(0x8, payload[:2]))
                await writer.drain()
                return False
            if opcode == 0x9:  # ping
                writer.write(ws_frame(0xA, payload))
            elif opcode in (0x1, 0x2):
                if opcode == 0x1 and payload == b"whoami":
                    writer.write(ws_frame(0x1, self.instance_id.encode()))
                else:
                    writer.write(ws_frame(opcode, payload))
            await writer.drain()


def reason(status: int) -> str:
    return {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Status")


async def read_head(reader: asyncio.StreamReader):
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return method, target, version, headers


async def read_body(reader: asyncio.StreamReader, headers) -> bytes:
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = int(headers.get("content-length", ["0"])[0] or 0)
    return await reader.readexactly(length) if length else b""


async def read_ws_frame(reader: asyncio.StreamReader):
    try:
        first = await reader.readexactly(2)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    opcode = first[0] & 0x0F
    masked = first[1] & 0x80
    length = first[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4) if masked else b"\x00\x00\x00\x00"
    payload = bytearray(await reader.readexactly(length))
    for i in range(length):
        payload[i] ^= mask[i % 4]
    return opcode, bytes(payload)


def ws_frame(opcode: int, payload: bytes) -> bytes:
    header = bytes([0x80 | opcode])
    if len(payload) < 126:
        header += bytes([len(payload)])
    elif len(payload) < 65536:
        header += bytes([126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([127]) + struct.pack("!Q", len(payload))
    return header + payload


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--index", default="0")
    parser.add_argument("--app-id", default="")
    args = parser.parse_args()
    backend = Backend(args.instance_id, args.index, args.app_id)
    server = await asyncio.start_server(backend.serve, "127.0.0.1", args.port, backlog=4096, limit=1 << 20)
    print(f"backend {args.instance_id} listening on {args.port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
