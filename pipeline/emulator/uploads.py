"""Temporary storage: ``getPolicy``, the OSS form-upload host, and ``oss://`` URLs resolved to uploaded files."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from .core import Emulator
from .fetch import temp_file
from .protocol import (
    OSS_BUCKET,
    OSS_UPLOAD_PATH,
    RESOLVE_HEADER,
    Dropped,
    Refusal,
    dropped_reply,
    oss_error,
    refusal_reply,
    reply,
    request_id,
)

POLICY_TIME = "%Y-%m-%dT%H:%M:%S.000Z"
FORM_FIELD_MAX_CHARS = 4096


class Uploads:
    """The upload flow of one emulator: policies signed with its secret, files kept in its store."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def handle_get_policy(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/uploads?action=getPolicy&model=M``: a signed form policy under ``data``."""
        rid = request_id()
        emu = self.emulator
        s = emu.settings
        try:
            account = emu.account(request)
            emu.throttle(account, "customization", s.rate_limit_rps, s.rate_limit_burst)
            if request.query.get("action") != "getPolicy":
                raise Refusal("InvalidParameter", "Unsupported action")
            model = request.query.get("model", "")
            if not model:
                raise Refusal("InvalidParameter", "Missing required parameter: model")
            emu.throttle(account, f"policy:{model}", s.policy_rps, s.policy_rps)
            await emu.inject(request, "get_policy")
        except Refusal as exc:
            return refusal_reply(rid, exc)
        except Dropped:
            return dropped_reply()
        now = dt.datetime.fromtimestamp(emu.clock.time(), dt.timezone.utc)
        upload_dir = f"{OSS_BUCKET}/{account}/{now:%Y-%m-%d}/{uuid.uuid4()}"
        expires = now + dt.timedelta(seconds=s.policy_expire_s)
        policy_doc = {
            "expiration": expires.strftime(POLICY_TIME),
            "conditions": [
                {"bucket": OSS_BUCKET},
                ["starts-with", "$key", upload_dir],
                ["content-length-range", 0, s.max_upload_mb * 1024 * 1024],
            ],
            "x-model": model,
            "x-upload-dir": upload_dir,
        }
        policy = base64.b64encode(json.dumps(policy_doc).encode()).decode()
        data = {
            "policy": policy,
            "signature": self.sign(policy),
            "upload_dir": upload_dir,
            "upload_host": f"{request.scheme}://{request.host}{OSS_UPLOAD_PATH}",
            "expire_in_seconds": s.policy_expire_s,
            "max_file_size_mb": s.max_upload_mb,
            "capacity_limit_mb": 999999999,
            "oss_access_key_id": "LTAI-emulator",
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        return reply(rid, 200, {"request_id": rid, "data": data})

    def sign(self, policy: str) -> str:
        """The policy's signature: HMAC-SHA1 with the emulator's persistent secret, base64."""
        return base64.b64encode(hmac.new(self.emulator.secret, policy.encode(), hashlib.sha1).digest()).decode()

    async def handle_form_upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /emulator-oss/upload``: the OSS form upload; errors are OSS's XML."""
        rid = uuid.uuid4().hex.upper()[:24]
        emu = self.emulator
        try:
            await emu.inject(request, "upload")
        except Refusal as exc:
            return oss_error(rid, 500 if exc.status >= 500 else exc.status, exc.code, exc.message)
        except Dropped:
            return dropped_reply()
        if not request.content_type.startswith("multipart/"):
            return oss_error(rid, 400, "InvalidArgument", "The body of your POST request is not well-formed multipart/form-data.")
        form: dict[str, str] = {}
        reader = await request.multipart()
        staged: Path | None = None
        size = 0
        try:
            while True:
                part = await reader.next()
                if part is None:
                    break
                if staged is not None:
                    return oss_error(rid, 400, "InvalidArgument", "The file must be the last field of the form.")
                name = getattr(part, "name", None) or ""
                if name != "file":
                    form[name] = (await part.text())[:FORM_FIELD_MAX_CHARS]  # type: ignore[union-attr]
                    continue
                error = self.check_policy(form)
                if error:
                    return oss_error(rid, *error)
                max_bytes = emu.settings.max_upload_mb * 1024 * 1024
                staged = temp_file(emu.fetcher.tmp_dir)
                with staged.open("wb") as fh:
                    while chunk := await part.read_chunk(1 << 16):  # type: ignore[union-attr]
                        size += len(chunk)
                        if size > max_bytes:
                            return oss_error(rid, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
                        fh.write(chunk)
            if staged is None:
                return oss_error(rid, 400, "InvalidArgument", "The form has no file field.")
            key = form["key"]
            if form.get("x-oss-forbid-overwrite", "").lower() == "true" and emu.store.upload_exists(key):
                return oss_error(rid, 409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
            final = emu.data_dir / "uploads" / hashlib.sha256(key.encode()).hexdigest()
            staged.replace(final)
            staged = None
            model = json.loads(base64.b64decode(form["policy"]))["x-model"]
            emu.store.put_upload(key, model, str(final), size, emu.settings.upload_ttl_s)
            emu.store.purge_uploads()
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        status = 204 if form.get("success_action_status") == "204" else 200
        return web.Response(status=status, headers={"x-oss-request-id": rid})

    def check_policy(self, form: Mapping[str, str]) -> tuple[int, str, str] | None:
        """OSS's answer (status, code, message) to a form whose policy does not hold, else None."""
        for required in ("OSSAccessKeyId", "Signature", "policy", "key"):
            if not form.get(required):
                return 400, "InvalidArgument", f"The form field {required} is missing."
        if not hmac.compare_digest(self.sign(form["policy"]), form["Signature"]):
            return 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."
        try:
            doc = json.loads(base64.b64decode(form["policy"]))
            expires = dt.datetime.strptime(doc["expiration"], POLICY_TIME).replace(tzinfo=dt.timezone.utc)
            upload_dir = str(doc["x-upload-dir"])
        except (ValueError, KeyError, TypeError):
            return 403, "AccessDenied", "Invalid Policy."
        if expires <= dt.datetime.fromtimestamp(self.emulator.clock.time(), dt.timezone.utc):
            return 403, "AccessDenied", "Invalid according to Policy: Policy expired."
        if not form["key"].startswith(upload_dir + "/") or ".." in form["key"].split("/"):
            return 403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: [\"starts-with\", \"$key\"]"
        return None

    async def resolve(self, request: web.Request, url: str, model: str) -> Path:
        """A temporary copy of the upload behind ``oss://KEY``, for a request with the resolve header and
        the policy's ``model``; else Refusal ``BadRequest.InputDownloadFailed``."""
        failed = f"Failed to download the input file: {url}"
        if request.headers.get(RESOLVE_HEADER, "").lower() != "enable":
            raise Refusal("BadRequest.InputDownloadFailed", f"{failed} (oss:// needs the header {RESOLVE_HEADER}: enable)")
        upload = self.emulator.store.upload(url[len("oss://") :])
        if upload is None or upload.model != model:
            raise Refusal("BadRequest.InputDownloadFailed", failed)
        target = temp_file(self.emulator.fetcher.tmp_dir)
        await asyncio.get_running_loop().run_in_executor(None, shutil.copyfile, Path(upload.path), target)
        return target
