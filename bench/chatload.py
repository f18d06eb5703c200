"""`stickylab-bench chat-load` (docs/chat-load.md) driven from asyncio: one JSON command per line on
its stdin, one reply per line on its stdout. Used by bench_chat.py (the chat clients) and
bench_socketio.py (the broadcast's receivers)."""

from __future__ import annotations

import asyncio
import json

import harness


class ChatLoadProcess:
    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls, *options: str) -> "ChatLoadProcess":
        process = await asyncio.create_subprocess_exec(
            str(harness.executable("stickylab-bench")), "chat-load", *options,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def command(self, cmd: str, **fields) -> dict:
        """Sends one command and returns its reply; a failed command raises with chat-load's message."""
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"stickylab-bench chat-load exited (status {await self.process.wait()}) during {cmd}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"stickylab-bench chat-load, {cmd}: {reply.get('error')}")
        return reply

    async def stop(self):
        """Closes every client, then stdin, and waits for the process to exit."""
        if self.process.returncode is None:
            await self.command("close")
            self.process.stdin.close()
        await asyncio.wait_for(self.process.wait(), timeout=30)
