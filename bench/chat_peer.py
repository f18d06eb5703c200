#!/usr/bin/env python3
"""The reference for bench_chat.py: the same chat job in python-socketio (5.x, aiohttp) with
AsyncRedisManager, the way a Python team would scale it across instances. On `chat` it broadcasts the
client's JSON string to every socket of every instance through Redis and acknowledges; no login, no
history, no recovery (chat-node does all three on top, and still has to be faster). Tests/cluster also
runs it as the Socket.IO app a Python team would bring to `cluster up --app`."""

from __future__ import annotations

import argparse

import socketio
from aiohttp import web


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--cookie", default=None,
                        help="the cookie that carries the Engine.IO session id (python-socketio's `cookie` option; "
                             "JSESSIONID makes Cloud Foundry's router sticky); none by default")
    args = parser.parse_args()
    manager = socketio.AsyncRedisManager(args.redis, channel="peer-chat")
    server = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, cors_allowed_origins="*",
                                  cookie=args.cookie, logger=False, engineio_logger=False)
    app = web.Application()
    server.attach(app)

    async def health(_request):
        return web.Response(text="ok")

    app.router.add_get("/health", health)

    @server.on("chat")
    async def chat(sid, data):
        await server.emit("chat", data)
        return {"ok": True}

    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
