"""Short-lived shared answers for the pages and API views many people poll.

The home page and the first pages of ``/api/v1/predictions`` are what a
wall screen, fifty colleagues and a script polling for new predictions all
ask for, again and again, while the store changes a few times a minute.
:class:`ResponseCache` answers a repeated ``GET`` of such a URL from a copy
made at most :data:`TTL` seconds ago, before FastAPI routes it: no
thread-pool hop, no query, no template, no JSON, and the body gzipped once.
Concurrent misses of one URL wait for the one request that makes it.

What a client sees is at most :data:`TTL` seconds behind the store; a write
through this server (a label, ``POST /api/v1/predict``) empties the cache at
once.  Every copy carries an ``ETag`` made from its body, and a request
whose ``If-None-Match`` holds it is answered ``304 Not Modified``.

Only ``200`` answers with one body and no cookie are kept, and nothing at
all when reads need the token (an answer is then per visitor).
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import hashlib
import threading
import time
from typing import Any

#: Seconds a copy is served.
TTL = 2.0
#: Copies kept (URLs: filter combinations and cursors), least recently used dropped.
SIZE = 512
#: The paths (below ``--root-path``) whose answers are kept.
PATHS = frozenset({"/", "/api/v1/predictions"})
#: Bodies smaller than this are sent as they are (gzip would not pay).
GZIP_MIN = 1024


class Entry:
    """One kept answer: status line headers, body, the body gzipped, its ETag."""

    __slots__ = ("headers", "body", "gzipped", "etag", "made", "generation")

    def __init__(self, headers: list[tuple[bytes, bytes]], body: bytes, generation: int):
        self.etag = b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'
        self.headers = [(k, v) for k, v in headers
                        if k.lower() not in (b"content-length", b"etag", b"cache-control",
                                             b"vary")]
        self.body = body
        self.gzipped = gzip.compress(body, compresslevel=6, mtime=0) \
            if len(body) >= GZIP_MIN else None
        self.made = time.monotonic()
        self.generation = generation


class Copies:
    """The kept answers, shared by the middleware and the routes that write; thread-safe."""

    def __init__(self, ttl: float = TTL, size: int = SIZE):
        self.ttl, self.size = ttl, size
        self._entries: collections.OrderedDict[Any, Entry] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0
        #: Answers served from a copy, and answers made.
        self.hits = self.misses = 0

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def clear(self) -> None:
        """Forget every copy (the store was written through this server)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def get(self, key: Any) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry.made > self.ttl or \
                    entry.generation != self._generation:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: Any, entry: Entry) -> None:
        with self._lock:
            if entry.generation != self._generation:
                return  # written meanwhile: this answer may be older than the write
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class ResponseCache:
    """Pure ASGI middleware answering ``GET`` of :data:`PATHS` from :class:`Copies`.

    It sits outside the security guard and the gzip middleware: a copy keeps
    the guard's headers, and the app makes it uncompressed (this middleware
    gzips it once).  An answer that is not kept is passed on uncompressed.
    """

    def __init__(self, app: Any, copies: Copies, enabled: bool = True):
        self.app = app
        self.copies = copies
        self.enabled = enabled
        self._pending: dict[Any, asyncio.Future] = {}

    async def __call__(self, scope, receive, send):
        if not self.enabled or scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path not in PATHS:
            return await self.app(scope, receive, send)
        key = (root, path, scope.get("query_string", b""))
        entry = self.copies.get(key)
        if entry is None:
            pending = self._pending.get(key)
            if pending is not None:
                # Another request is making this answer: wait for it rather than
                # running the same query and template again.
                entry = await asyncio.shield(pending)
            else:
                entry = await self._make(key, scope, receive, send)
                if entry is None:
                    return  # answered by the app as it was (not kept)
        else:
            self.copies.hits += 1
        if entry is None:
            return await self.app(scope, receive, send)
        await _send_entry(entry, scope, send)

    async def _make(self, key, scope, receive, send) -> Entry | None:
        """Run the app for ``key``; keep its answer if it may be shared."""
        self.copies.misses += 1
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        generation = self.copies.generation
        start: dict[str, Any] = {}
        parts: list[bytes] = []
        sent = False

        async def capture(message):
            nonlocal sent
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] == "http.response.body" and not sent:
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    sent = True
                return
            await send(message)

        entry = None
        # Made uncompressed: the copy is gzipped once, here, for every client.
        plain = {**scope, "headers": [(k, v) for k, v in scope.get("headers") or ()
                                      if k.lower() != b"accept-encoding"]}
        try:
            await self.app(plain, receive, capture)
            headers = list(start.get("headers", []))
            shareable = start.get("status") == 200 and sent and not any(
                k.lower() in (b"set-cookie", b"content-encoding") for k, _ in headers)
            if shareable:
                entry = Entry(headers, b"".join(parts), generation)
                self.copies.put(key, entry)
            elif start:
                # Not kept (an error, a cookie): passed on as the app gave it.
                await send(start)
                await send({"type": "http.response.body", "body": b"".join(parts)})
        finally:
            self._pending.pop(key, None)
            future.set_result(entry)
        return entry


async def _send_entry(entry: Entry, scope: dict, send) -> None:
    request = dict(scope.get("headers") or ())
    headers = list(entry.headers)
    headers += [(b"etag", entry.etag), (b"cache-control", b"no-cache"),
                (b"vary", b"Accept-Encoding")]
    if entry.etag in request.get(b"if-none-match", b""):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    body = entry.body
    if entry.gzipped is not None and b"gzip" in request.get(b"accept-encoding", b""):
        body = entry.gzipped
        headers.append((b"content-encoding", b"gzip"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
