"""An in-memory fake of the enrollment endpoint for httpx.MockTransport (no network at all)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

BASE = "https://dashscope.test/api/v1"
UPLOAD_HOST = "https://oss.test"
KEY = "sk-test-SECRET-0123456789"

# A scripted answer: a Response, an exception to raise, or a callable(request) -> Response.
Script = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, message: str, rid: str = "rid-err") -> httpx.Response:
    return httpx.Response(status, json={"request_id": rid, "code": code, "message": message},
                          headers={"x-request-id": rid})


@dataclass
class FakeService:
    """Voices in a dict; ``script[action]`` lists answers to give before serving normally.

    ``after_create`` lists exceptions to raise AFTER a create was carried out (a lost answer).
    ``deploy_polls`` is how many query_voice answers say DEPLOYING before OK.
    """

    voices: dict[str, dict[str, Any]] = field(default_factory=dict)
    script: dict[str, list[Script]] = field(default_factory=dict)
    after_create: list[Exception] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    deploy_polls: int = 1
    final_status: str = "OK"
    uploads: dict[str, bytes] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def calls(self, action: str) -> list[dict[str, Any]]:
        out = []
        for r in self.requests:
            if r.method == "POST" and r.url.path.endswith("/customization"):
                body = json.loads(r.content)
                if body["input"]["action"] == action:
                    out.append(body["input"])
        return out

    def add_voice(self, prefix: str, url: str, model: str = "cosyvoice-v2", status: str = "OK") -> str:
        vid = f"{model}-{prefix}-{uuid.uuid4().hex}"
        self.voices[vid] = {"url": url, "model": model, "status": status, "gmt": f"2025-01-01 00:00:{len(self.voices):02d}"}
        self.polls[vid] = self.deploy_polls if status == "DEPLOYING" else 0
        return vid

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/uploads"):
            action = "getPolicy"
        elif request.url.host == httpx.URL(UPLOAD_HOST).host:
            action = "upload"
        else:
            action = json.loads(request.content)["input"]["action"]
        queue = self.script.get(action)
        if queue:
            item = queue.pop(0)
            if isinstance(item, Exception):
                raise item
            if isinstance(item, httpx.Response):
                return item
            return item(request)
        return getattr(self, "_" + action.replace("getPolicy", "get_policy"))(request)

    def _ok(self, output: dict[str, Any]) -> httpx.Response:
        rid = str(uuid.uuid4())
        return httpx.Response(200, json={"output": output, "usage": {"count": 1}, "request_id": rid},
                              headers={"x-request-id": rid})

    def _auth(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return error(401, "InvalidApiKey", "Invalid API-key provided.")
        return None

    def _create_voice(self, request: httpx.Request) -> httpx.Response:
        bad = self._auth(request)
        if bad:
            return bad
        inp = json.loads(request.content)["input"]
        vid = self.add_voice(inp["prefix"], inp["url"], inp["target_model"], "DEPLOYING")
        if self.after_create:
            raise self.after_create.pop(0)
        return self._ok({"voice_id": vid})

    def _list_voice(self, request: httpx.Request) -> httpx.Response:
        inp = json.loads(request.content)["input"]
        prefix = inp.get("prefix")
        items = [
            {"voice_id": k, "gmt_create": v["gmt"], "gmt_modified": v["gmt"], "status": v["status"]}
            for k, v in self.voices.items() if not prefix or k.split("-")[-2] == prefix
        ]
        i, n = inp["page_index"], inp["page_size"]
        return self._ok({"voice_list": items[i * n : (i + 1) * n]})

    def _query_voice(self, request: httpx.Request) -> httpx.Response:
        vid = json.loads(request.content)["input"]["voice_id"]
        v = self.voices.get(vid)
        if v is None:
            return error(400, "BadRequest.ResourceNotExist", "The Required resource not exist.")
        if v["status"] == "DEPLOYING":
            if self.polls.get(vid, 0) <= 0:
                v["status"] = self.final_status
            else:
                self.polls[vid] -= 1
        return self._ok({"gmt_create": v["gmt"], "gmt_modified": v["gmt"], "resource_link": v["url"],
                         "target_model": v["model"], "status": v["status"]})

    def _update_voice(self, request: httpx.Request) -> httpx.Response:
        inp = json.loads(request.content)["input"]
        if inp["voice_id"] not in self.voices:
            return error(400, "BadRequest.ResourceNotExist", "The Required resource not exist.")
        self.voices[inp["voice_id"]].update(url=inp["url"], status="DEPLOYING")
        return self._ok({})

    def _delete_voice(self, request: httpx.Request) -> httpx.Response:
        vid = json.loads(request.content)["input"]["voice_id"]
        if self.voices.pop(vid, None) is None:
            return error(400, "BadRequest.ResourceNotExist", "The Required resource not exist.")
        return self._ok({})

    def _get_policy(self, request: httpx.Request) -> httpx.Response:
        q = parse_qs(request.url.query.decode())
        return httpx.Response(200, json={"request_id": "rid-policy", "data": {
            "policy": "P", "signature": "S", "upload_dir": f"dashscope-instant/abc/{q['model'][0]}/xyz",
            "upload_host": UPLOAD_HOST, "expire_in_seconds": 300, "max_file_size_mb": 100,
            "capacity_limit_mb": 999999999, "oss_access_key_id": "AK", "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true"}})

    def _upload(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        key = body.split(b'name="key"\r\n\r\n', 1)[1].split(b"\r\n", 1)[0].decode()
        self.uploads[key] = body
        return httpx.Response(200)


@dataclass
class EchoingService(FakeService):
    """A FakeService behind a careless proxy that echoes the ``Authorization`` header into ``x-request-id``,
    the reason phrase, the body's ``request_id`` and messages, and the key itself into URLs (raw and
    percent-encoded) inside every answer. ``key`` is the accepted key."""

    key: str = KEY

    def _auth(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return error(401, "InvalidApiKey", "Invalid API-key provided.")
        return None

    def handle(self, request: httpx.Request) -> httpx.Response:
        resp = super().handle(request)
        auth = request.headers.get("authorization", "")
        from urllib.parse import quote, quote_plus

        links = [f"https://proxy.test/cb?token={self.key}", f"https://proxy.test/cb?token={quote(self.key, safe='')}",
                 f"https://proxy.test/cb?k={quote_plus(self.key)}"]
        headers = {k: v for k, v in resp.headers.items() if k not in ("content-length", "content-type")}
        headers.update({"x-request-id": auth, "x-oss-request-id": auth, "x-echo": links[1]})
        reason = f"{resp.reason_phrase} seen {auth}".encode()
        try:
            body = json.loads(resp.content) if resp.content else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = f"<Error><Code>AccessDenied</Code><Message>{auth}</Message><RequestId>{auth}</RequestId></Error>"
            if resp.status_code < 300:
                return httpx.Response(resp.status_code, headers=headers, extensions={"reason_phrase": reason})
            return httpx.Response(resp.status_code, text=text, headers=headers, extensions={"reason_phrase": reason})
        body["request_id"] = auth
        if "message" in body:
            body["message"] = f"{body['message']} (request had {auth}; see {links[0]})"
        for part in ("output", "data"):
            if isinstance(body.get(part), dict):
                body[part]["proxy_links"] = links
                for v in body[part].get("voice_list", []):
                    v["note"] = f"listed for {auth}"
        return httpx.Response(resp.status_code, json=body, headers=headers, extensions={"reason_phrase": reason})
