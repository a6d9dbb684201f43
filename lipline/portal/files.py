"""Serve store objects to the browser: HTTP range requests (206) for the video players, downloads, and presigned
URLs when the store is S3. Only keys the portal chose reach here (never a path from the client)."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator

from fastapi import HTTPException
from fastapi.responses import Response, StreamingResponse

from lipline.settings import get_settings
from lipline.store import Store

CHUNK = 1 << 20
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str, size: int) -> tuple[int, int]:
    match = RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise HTTPException(416, "unsupported Range header: use one range, bytes=START-END",
                            headers={"Content-Range": f"bytes */{size}"})
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HTTPException(416, f"range {header} is outside the file ({size} bytes)",
                            headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _read(store: Store, key: str, start: int, length: int) -> Iterator[bytes]:
    with store.fs.open(store.backend.path(key), "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                break
            left -= len(block)
            yield block


def serve(store: Store, key: str, range_header: str | None, *, download_name: str | None = None) -> Response:
    """The object at `key`, whole (200) or one byte range (206), streamed in 1 MB blocks."""
    try:
        size = int(store.fs.size(store.backend.path(key)))
    except FileNotFoundError:
        raise HTTPException(404, f"{key.rsplit('/', 1)[-1]} is not in the store (yet)") from None
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    headers = {"Accept-Ranges": "bytes"}
    if download_name:
        headers["Content-Disposition"] = f'attachment; filename="{download_name}"'
    if range_header:
        start, end = _parse_range(range_header, size)
        headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)})
        return StreamingResponse(_read(store, key, start, end - start + 1), status_code=206, headers=headers,
                                 media_type=media_type)
    headers["Content-Length"] = str(size)
    return StreamingResponse(_read(store, key, 0, size), headers=headers, media_type=media_type)


def is_s3(store: Store) -> bool:
    """The store is an S3 bucket (presigned URLs and multipart uploads apply)."""
    protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
    return not store.local and bool(set(protocols) & {"s3", "s3a"})


def bucket_and_key(store: Store, key: str) -> tuple[str, str]:
    """(bucket, object key) of a store key."""
    bucket, _, object_key = store.backend.path(key).partition("/")
    return bucket, object_key


def s3_client(*, public: bool):
    """A botocore S3 client with the store's credentials (`Settings.s3_options`): on the endpoint browsers reach
    (``LIPLINE_PORTAL_S3_PUBLIC_URL``, for presigning) when `public`, else on the store's own endpoint."""
    import boto3
    from botocore.config import Config

    settings = get_settings()
    options = settings.s3_options()
    client_kwargs = options.get("client_kwargs", {})
    endpoint = client_kwargs.get("endpoint_url")
    if public and settings.portal_s3_public_url:
        endpoint = settings.portal_s3_public_url
    return boto3.client("s3", endpoint_url=endpoint, region_name=client_kwargs.get("region_name"),
                        aws_access_key_id=options.get("key"), aws_secret_access_key=options.get("secret"),
                        config=Config(signature_version="s3v4"))


def presigned_url(store: Store, key: str, *, download_name: str | None = None, expires_s: int = 3600) -> str | None:
    """A presigned (SigV4) GET URL on S3 stores, so the browser downloads from S3 directly; None elsewhere. The
    endpoint and credentials are the store's (`Settings.s3_options`)."""
    if not is_s3(store):
        return None
    bucket, object_key = bucket_and_key(store, key)
    params = {"Bucket": bucket, "Key": object_key}
    client = s3_client(public=True)
    if download_name:
        params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
    return client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
