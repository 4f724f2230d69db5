"""Task and result zips stored in Redis by content, so that Celery messages
carry a short reference instead of up to 100 MB of bytes."""

from __future__ import annotations

import hashlib
from typing import cast

import redis

from hivemind_celery.core import keys
from hivemind_celery.core.errors import HivemindError
from hivemind_celery.core.redis_client import payload_redis
from hivemind_celery.core.settings import Settings, get_settings

REF_PREFIX = "sha256:"


class PayloadError(HivemindError):
    """Base for payload store errors."""


class PayloadTooLarge(PayloadError, ValueError):
    pass


class PayloadMissing(PayloadError, LookupError):
    pass


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PayloadStore:
    """Content-addressed blobs with a TTL. Storing the same bytes twice keeps
    one copy and refreshes its TTL."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        self._redis = client
        self.max_bytes = settings.payload_max_bytes
        self.ttl = settings.payload_ttl

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PayloadStore:
        settings = settings or get_settings()
        return cls(payload_redis(settings), settings)

    def put(self, data: bytes, client: redis.Redis | redis.client.Pipeline | None = None) -> str:
        """Store `data`; returns its reference. With `client` (a pipeline) the write is
        queued there and done by its execute()."""
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"payload is {len(data)} bytes, above the limit of {self.max_bytes} bytes")
        digest = digest_of(data)
        (client or self._redis).set(keys.payload(digest), data, ex=self.ttl)
        return REF_PREFIX + digest

    def get(self, ref: str) -> bytes:
        data = self._redis.get(keys.payload(self._digest(ref)))
        if data is None:
            raise PayloadMissing(f"payload {ref} is not in the store (expired or never stored)")
        return cast(bytes, data)

    def delete(self, ref: str) -> None:
        self._redis.delete(keys.payload(self._digest(ref)))

    def exists(self, ref: str) -> bool:
        return bool(self._redis.exists(keys.payload(self._digest(ref))))

    @staticmethod
    def _digest(ref: str) -> str:
        digest = ref.removeprefix(REF_PREFIX)
        if ref == digest or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise PayloadMissing(f"{ref!r} is not a payload reference (sha256:<hex>)")
        return digest
