"""Examiner login in front of Gradio's: attempts limited per user and per address, failures answered late, sessions
that expire, and a login page that does not describe the API.

Gradio's /login answers a wrong password at once, as often as asked, and the session token it sets never expires.
`LoginGuard` is ASGI middleware on Gradio's FastAPI app (launch's app_kwargs), so it sees every request first:

- a user name or a client address with ATTEMPTS logins in WINDOW_S that were not followed by a success gets 429
  (Too Many Requests) without its password being checked, until the oldest attempt is WINDOW_S old; attempts are
  counted when they arrive, so a burst sent at once is limited too;
- a wrong password is answered FAILURE_DELAY_S late (the wait blocks nothing else: it is an asyncio sleep);
- a session token older than `session_s` is dropped from Gradio's table, so its cookie is refused like a wrong one;
- the page a visitor without a session gets (the login form) carries no API description.

The address is the TCP peer: behind a reverse proxy every client shares the proxy's, so the per-address limit then
applies to all of them together (the per-user limit still holds).
"""

import asyncio
import json
import re
import time
from collections import defaultdict, deque
from urllib.parse import parse_qs

ATTEMPTS = 5
WINDOW_S = 15 * 60.0
FAILURE_DELAY_S = 1.0
API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)


class LoginGuard:
    def __init__(self, app, session_s: float):
        self.app = app
        self.session_s = session_s
        self.attempts: dict[str, deque[float]] = defaultdict(deque)  # "user:ann", "address:10.0.0.7" -> times
        self.issued: dict[str, float] = {}  # session token -> when it was issued

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        gradio = scope["app"]  # Starlette puts the app (Gradio's App, which holds .tokens) in the scope
        now = time.monotonic()
        for token in [t for t, at in self.issued.items() if now - at > self.session_s]:
            del self.issued[token]
            gradio.tokens.pop(token, None)
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in ("/login", "/login/"):
            return await self._login(scope, receive, send, now)
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/" \
                and not any(t in gradio.tokens for t in _tokens(scope)):
            return await self.app(scope, receive, _without_api_info(send))
        await self.app(scope, receive, send)

    async def _login(self, scope, receive, send, now: float):
        body, more = b"", True
        while more and len(body) < 65_536:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        user = parse_qs(body.decode("latin-1")).get("username", [""])[0].strip()
        keys = [f"user:{user}", f"address:{(scope.get('client') or ('?',))[0]}"]
        for key in keys:
            while self.attempts[key] and now - self.attempts[key][0] > WINDOW_S:
                self.attempts[key].popleft()
            if not self.attempts[key]:
                del self.attempts[key]
        if blocked := [key for key in keys if len(self.attempts.get(key, ())) >= ATTEMPTS]:
            wait = max(WINDOW_S - (now - self.attempts[key][0]) for key in blocked)
            return await _json(send, 429, {"detail": f"Too many login attempts. Try again in {wait / 60:.0f} min."},
                               [(b"retry-after", str(round(wait)).encode())])
        for key in keys:
            self.attempts[key].append(now)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def answer(message):
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    for key in keys:
                        self.attempts.pop(key, None)
                    for token in _set_tokens(message.get("headers", [])):
                        self.issued[token] = now
                else:
                    await asyncio.sleep(FAILURE_DELAY_S)
            await send(message)

        await self.app(scope, replay, answer)


def _tokens(scope) -> list[str]:
    """The session tokens in the request's cookies (Gradio sets access-token-<id> and access-token-unsecure-<id>)."""
    cookies = b"; ".join(v for k, v in scope.get("headers", []) if k == b"cookie").decode("latin-1")
    return [value for name, _, value in (c.strip().partition("=") for c in cookies.split(";"))
            if name.startswith("access-token")]


def _set_tokens(headers) -> set[str]:
    return {v.decode("latin-1").split(";")[0].partition("=")[2] for k, v in headers
            if k == b"set-cookie" and v.startswith(b"access-token")}


def _without_api_info(send):
    """A `send` that buffers the page and blanks its embedded API description (the login page needs none)."""
    start, chunks = None, []

    async def buffered(message):
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = API_INFO.sub(b"window.gradio_api_info = {};</script>", b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        await send(start | {"headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return buffered


async def _json(send, status: int, content: dict, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
