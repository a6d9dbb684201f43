"""Presigned multipart uploads from the browser straight into an S3 store (files of several GB never pass through
the portal).

1. `start`: the browser declares a role, a file name and a size; the server checks the role, the extension and
   the size limit, makes the key itself (`uploads.upload_key`), creates the multipart upload and returns one
   presigned ``UploadPart`` URL per `PART_SIZE` slice (signed for that key, that upload id and that part number
   only, on ``LIPLINE_PORTAL_S3_PUBLIC_URL``). What it started is remembered in the store
   (``_portal/uploads/<draft>/<role>.pending.json``), so the client never names a key or an upload id it did
   not get.
2. The browser PUTs each slice to its URL and collects the ETags (the bucket's CORS must expose ``ETag``).
3. `complete`: the server completes the upload with those ETags, checks the stored size against the declared one
   and the limit, range-reads the first bytes and sniffs them (`uploads.check_content`, as for streamed uploads);
   a refused file is deleted. Any failure aborts the multipart upload; `abort` is the browser's way to do it.
"""

from __future__ import annotations

import math

from botocore.exceptions import BotoCoreError, ClientError

from lipline.errors import StoreError
from lipline.portal import files, uploads
from lipline.portal.uploads import UploadRefused
from lipline.store import Store

PART_SIZE = 16 * 1024 * 1024  # S3: every part but the last ≥ 5 MiB; at most 10,000 parts (156 GiB here)
URL_EXPIRES_S = 6 * 3600  # long enough for several GB on a slow office uplink


def _pending_key(draft: str, role: str) -> str:
    if role not in uploads.ROLES:
        raise UploadRefused(f"unknown role {role!r}: choose one of {', '.join(uploads.ROLES)}", status=404)
    return f"{uploads.PREFIX}/{uploads.check_draft_id(draft)}/{role}.pending.json"


def _size_refusal(name: str, role: str, size: int, limit: int) -> UploadRefused:
    return UploadRefused(f"{uploads.display_name(name)}: {size / 1024 / 1024:.1f} MB is over the {role} limit of "
                         f"{limit / 1024 / 1024:.0f} MB; shorten or re-encode it (the limit is "
                         "LIPLINE_PORTAL_MAX_UPLOAD_MB)", status=413)


def _client_error(action: str, exc: Exception) -> StoreError:
    return StoreError(f"S3 {action} failed: {exc}")


def start(store: Store, draft: str, role: str, name: str, size: int, max_mb: float, user: str) -> dict:
    """Create the multipart upload for `role` and presign its parts; a pending upload of the role is aborted."""
    _pending_key(draft, role)
    ext = uploads.extension_for(role, name)
    limit = uploads.max_bytes(role, max_mb)
    if size <= 0:
        raise UploadRefused(f"{uploads.display_name(name)}: the file is empty; upload the {role} file itself")
    if size > limit:
        raise _size_refusal(name, role, size, limit)
    abort(store, draft, role)
    key = uploads.upload_key(draft, role, ext)
    bucket, object_key = files.bucket_and_key(store, key)
    try:
        upload_id = files.s3_client(public=False).create_multipart_upload(Bucket=bucket, Key=object_key)["UploadId"]
    except (BotoCoreError, ClientError) as exc:
        raise _client_error("CreateMultipartUpload", exc) from exc
    store.put_json({"upload_id": upload_id, "key": key, "name": uploads.display_name(name), "size": size,
                    "part_size": PART_SIZE, "user": user}, _pending_key(draft, role))
    signer = files.s3_client(public=True)
    parts = [signer.generate_presigned_url("upload_part", ExpiresIn=URL_EXPIRES_S,
                                           Params={"Bucket": bucket, "Key": object_key, "UploadId": upload_id,
                                                   "PartNumber": number})
             for number in range(1, math.ceil(size / PART_SIZE) + 1)]
    return {"upload_id": upload_id, "part_size": PART_SIZE, "parts": parts}


def _pending(store: Store, draft: str, role: str, upload_id: str) -> dict:
    key = _pending_key(draft, role)
    pending = store.read_json(key) if store.exists(key) else None
    if pending is None or pending["upload_id"] != upload_id:
        raise UploadRefused(f"no upload {upload_id!r} in progress for the {role}: start the upload again",
                            status=409)
    return pending


def complete(store: Store, draft: str, role: str, upload_id: str, etags: list[str]) -> uploads.Uploaded:
    """Complete the upload with the parts' ETags (in part order), then check size and content; on any failure the
    multipart upload is aborted and a completed but refused object deleted."""
    pending = _pending(store, draft, role, upload_id)
    key, name = pending["key"], pending["name"]
    bucket, object_key = files.bucket_and_key(store, key)
    client = files.s3_client(public=False)
    completed = False
    try:
        expected = math.ceil(pending["size"] / pending["part_size"])
        if len(etags) != expected or not all(isinstance(e, str) for e in etags):
            raise UploadRefused(f"{name}: {len(etags)} part ETags sent, {expected} expected for the declared size; "
                                "upload the file again")
        try:
            done = client.complete_multipart_upload(
                Bucket=bucket, Key=object_key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
        except ClientError as exc:
            raise UploadRefused(f"{name}: the store refused to assemble the parts "
                                f"({exc.response.get('Error', {}).get('Code', 'error')}); upload the file again",
                                status=400) from None
        completed = True
        head = client.head_object(Bucket=bucket, Key=object_key)
        if head["ContentLength"] != pending["size"]:  # parts larger than the slices declared, or missing bytes
            raise UploadRefused(f"{name}: {head['ContentLength']} bytes arrived, {pending['size']} were declared; "
                                "upload the file again")
        first = client.get_object(Bucket=bucket, Key=object_key, Range=f"bytes=0-{uploads.SNIFF_BYTES - 1}")
        uploads.check_content(role, name, key[key.rindex("."):], first["Body"].read())
        stored = uploads.record_upload(store, draft, role, name, key, head["ContentLength"], pending["user"],
                                       etag=done.get("ETag", head.get("ETag", "")).strip('"'))
    except BaseException as exc:
        if completed:
            store.delete(key)
        else:
            _abort_quietly(client, bucket, object_key, upload_id)
        store.delete(_pending_key(draft, role))
        if isinstance(exc, (BotoCoreError, ClientError)):
            raise _client_error("completing the multipart upload", exc) from exc
        raise
    store.delete(_pending_key(draft, role))
    return stored


def _abort_quietly(client, bucket: str, object_key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=object_key, UploadId=upload_id)
    except Exception:  # noqa: BLE001 - already gone (completed or aborted): nothing left to free
        pass


def abort(store: Store, draft: str, role: str, upload_id: str | None = None) -> None:
    """Abort the role's pending multipart upload (only `upload_id` when given), freeing its parts."""
    key = _pending_key(draft, role)
    if not store.exists(key):
        return
    pending = store.read_json(key)
    if upload_id is not None and pending["upload_id"] != upload_id:
        return
    bucket, object_key = files.bucket_and_key(store, pending["key"])
    _abort_quietly(files.s3_client(public=False), bucket, object_key, pending["upload_id"])
    store.delete(key)
