"""What pyarrow.fs does not show of an S3 bucket: objects' ETags, incomplete multipart uploads.

Through boto3 (the `aws` extra), with the credentials and endpoint pyarrow uses
(AWS_* variables, an instance profile, AWS_ENDPOINT_URL; an `endpoint_override` or
`region` in the URI's query, as pyarrow reads them). `available(uri)` says whether these
calls can be made for a URI: an s3:// one, with boto3 installed. Imports neither
TensorFlow nor Ray.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rmaunet import atomic
from rmaunet.errors import StoreError
from rmaunet.storage import _one_line

__all__ = ["available", "list_etags", "incomplete_uploads", "abort_upload", "abort_stale_uploads", "Upload"]


@dataclass(frozen=True)
class Upload:
    """One multipart upload that was started and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: dt.datetime


def available(uri: str) -> bool:
    return uri.lower().startswith("s3://") and importlib.util.find_spec("boto3") is not None


def list_etags(uri: str) -> list[tuple[str, int, str]]:
    """Every object below `uri` as (path relative to it, size, ETag), sorted; never a
    temporary file or a folder marker."""
    client, bucket, prefix = _open(uri)
    found = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if rel and not rel.endswith("/") and not atomic.is_temporary(rel.rsplit("/", 1)[-1]):
                    found.append((rel, int(obj["Size"]), str(obj["ETag"]).strip('"')))
    except Exception as exc:  # botocore's errors share no base class with a useful message
        raise StoreError(f"{uri}: cannot list ({_one_line(exc)})") from None
    return sorted(found)


def incomplete_uploads(uri: str) -> list[Upload]:
    """The multipart uploads under `uri` that were started and never completed or aborted."""
    client, bucket, prefix = _open(uri)
    found = []
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                found.append(Upload(upload["Key"], upload["UploadId"], upload["Initiated"]))
    except Exception as exc:
        raise StoreError(f"{uri}: cannot list its multipart uploads ({_one_line(exc)})") from None
    return sorted(found, key=lambda u: (u.initiated, u.key))


def abort_upload(uri: str, upload: Upload) -> None:
    """Abort `upload` (its parts are deleted; an object of that key, if any, stays)."""
    client, bucket, _ = _open(uri)
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=upload.key, UploadId=upload.upload_id)
    except Exception as exc:
        raise StoreError(f"s3://{bucket}/{upload.key}: cannot abort its upload ({_one_line(exc)})") from None


def _open(uri: str) -> tuple[Any, str, str]:
    """A boto3 S3 client, the bucket and the key prefix ("" or ending in "/") of `uri`."""
    import boto3

    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise StoreError(f"{uri}: not an s3://bucket[/prefix] URI")
    query = parse_qs(parts.query)
    options: dict[str, str] = {}
    if "endpoint_override" in query:
        endpoint = query["endpoint_override"][0]
        scheme = query.get("scheme", ["https"])[0]
        options["endpoint_url"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
    if "region" in query:
        options["region_name"] = query["region"][0]
    prefix = parts.path.strip("/")
    return boto3.client("s3", **options), parts.netloc, f"{prefix}/" if prefix else ""


def abort_stale_uploads(uri: str, older_than: dt.timedelta, *, dry_run: bool = False) -> list[Upload]:
    """Abort the incomplete multipart uploads under `uri` started more than `older_than` ago
    (a younger one may be a live writer's); returns them (with `dry_run`, only lists them)."""
    cutoff = dt.datetime.now(dt.timezone.utc) - older_than
    stale = [u for u in incomplete_uploads(uri) if u.initiated <= cutoff]
    if not dry_run:
        for upload in stale:
            abort_upload(uri, upload)
    return stale
