"""Uploads of local clips: the service's temporary storage, an S3-compatible bucket, or a public base URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from pipeline.errors import ConfigError

from .client import EnrollmentClient
from .errors import ServiceError
from .settings import ENROLLMENT_MODEL, EnrollSettings, S3Settings

CONTENT_TYPES = {"wav": "audio/x-wav", "mp3": "audio/mpeg", "mp4": "audio/mp4", "aac": "audio/aac"}


def content_type(data: bytes) -> str:
    """The MIME type of audio bytes, by content (as the SDK's guess names WAV: ``audio/x-wav``)."""
    from pipeline.audio_io import sniff

    return CONTENT_TYPES.get(sniff(data[:64]), "application/octet-stream")


@dataclass(frozen=True)
class Uploaded:
    """Where the service can fetch the audio; ``oss_resolve``: an ``oss://`` URL (needs the resolve header)."""

    url: str

    @property
    def oss_resolve(self) -> bool:
        return self.url.startswith("oss://")


class Uploader(Protocol):
    """Put audio bytes where the service can download them. ``object_name`` is content-derived
    (``<sha256>.wav``), so the same audio always maps to the same name; ``filename`` is the local name."""

    method: str

    def upload(self, data: bytes, *, object_name: str, filename: str) -> Uploaded: ...


class DashScopeUploader:
    """The service's temporary storage: getPolicy, a form upload, then ``oss://`` (48 h, this account only)."""

    method = "dashscope"

    def __init__(self, client: EnrollmentClient, model: str = ENROLLMENT_MODEL) -> None:
        self.client = client
        self.model = model

    def upload(self, data: bytes, *, object_name: str, filename: str) -> Uploaded:
        return Uploaded(self.client.upload_temporary(data, object_name, model=self.model,
                                                     content_type=content_type(data)))


class PublicUploader:
    """Files the user already hosts: ``base_url`` + the local file name; nothing is uploaded."""

    method = "public"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"

    def upload(self, data: bytes, *, object_name: str, filename: str) -> Uploaded:
        return Uploaded(self.base_url + quote(os.fsencode(filename)))  # a non-UTF-8 name: its own bytes


class S3Uploader:
    """Any S3-compatible bucket (AWS S3, Alibaba OSS's S3 endpoint, MinIO...), shared by a presigned GET URL.

    Needs boto3 (``pip install 'voiceprep[s3]'``). Credentials come from boto3's usual sources.
    """

    method = "s3"

    def __init__(self, settings: S3Settings, *, client: Any = None) -> None:
        self.settings = settings
        self._s3 = client if client is not None else self._make_client(settings)

    @staticmethod
    def _make_client(s: S3Settings) -> Any:
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise ConfigError(
                "enroll.upload 's3' needs boto3: pip install 'voiceprep[s3]'"
            ) from None
        session = boto3.session.Session(profile_name=s.profile) if s.profile else boto3.session.Session()
        cfg = BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": s.addressing_style},
            retries={"max_attempts": 4, "mode": "standard"},
        )
        return session.client("s3", endpoint_url=s.endpoint_url, region_name=s.region, config=cfg)

    def __repr__(self) -> str:
        return f"S3Uploader(bucket={self.settings.bucket!r}, endpoint_url={self.settings.endpoint_url!r})"

    def upload(self, data: bytes, *, object_name: str, filename: str) -> Uploaded:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.settings.key_prefix}{object_name}"
        try:
            self._s3.put_object(Bucket=self.settings.bucket, Key=key, Body=data, ContentType=content_type(data))
            url = self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.settings.bucket, "Key": key}, ExpiresIn=self.settings.expires_s
            )
        except ClientError as exc:
            err = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            raise ServiceError(
                str(err.get("Code", "S3Error")), str(err.get("Message", "the bucket refused the upload")),
                http_status=meta.get("HTTPStatusCode"), request_id=meta.get("RequestId"), action="upload",
                hint=f"check the bucket {self.settings.bucket!r}, its endpoint and your S3 credentials",
                retryable=False,
            ) from None
        except BotoCoreError as exc:
            raise ServiceError(
                "ConnectionError", f"S3 upload failed: {type(exc).__name__}", action="upload",
                hint="check enroll.s3.endpoint_url and the network", retryable=False,
            ) from None
        return Uploaded(str(url))


def make_uploader(settings: EnrollSettings, client: EnrollmentClient) -> Uploader:
    """The uploader chosen by ``enroll.upload`` in pipeline.yaml."""
    if settings.upload == "s3":
        if settings.s3 is None:
            raise ConfigError("enroll.upload is 's3' but enroll.s3 is missing")
        return S3Uploader(settings.s3)
    if settings.upload == "public":
        if not settings.public_base_url:
            raise ConfigError("enroll.upload is 'public' but enroll.public_base_url is missing")
        return PublicUploader(settings.public_base_url)
    return DashScopeUploader(client)
