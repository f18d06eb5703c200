"""The reference for bench_socketio.py: python-socketio's AsyncServer on aiohttp, with the same
behaviours as socketio-testserver for the benchmark (`echo` back to the sender, `broadcast` to all).
Usage: python socketio_reference_server.py <port>"""

import sys

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", ping_interval=120, ping_timeout=120,
                           max_http_buffer_size=1_000_000)
app = web.Application()
sio.attach(app)


@sio.on("echo")
async def echo(sid, *args):
    await sio.emit("echo", args[0] if len(args) == 1 else list(args), to=sid)


@sio.on("broadcast")
async def broadcast(sid, *args):
    await sio.emit("broadcast", args[0] if len(args) == 1 else list(args))


if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
