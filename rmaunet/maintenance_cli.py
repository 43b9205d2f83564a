"""`rmaunet cache info|prune` (this node's bounded cache) and `rmaunet store clean` (a store's leftovers)."""

from __future__ import annotations

import argparse
import datetime as dt
import time

from rmaunet.errors import plural

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    cache = sub.add_parser(
        "cache",
        help="this node's cache: staged datasets, band caches, trial folders",
        description=(
            "This node's cache ($RMAUNET_CACHE_DIR, else ~/.cache/rmaunet): datasets staged from an "
            "object store, decoded tiles and bands, trials in progress and copies of finished ones. "
            "It is kept within $RMAUNET_CACHE_MAX_SIZE (default 20GB) after each staging and trial, "
            "least recently used first; an entry a live process uses is never removed."
        ),
    )
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="every entry: kind, size, last use, in use or not")
    info.set_defaults(func=run_info)
    prune = actions.add_parser(
        "prune", help="remove abandoned work folders, then least recently used entries down to a size"
    )
    prune.add_argument("--max-size", help="what the cache may keep, e.g. 20GB, 500MB, 1.5TiB (default: the cap)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    prune.set_defaults(func=run_prune)

    store = sub.add_parser("store", help="maintenance of a results store")
    store_actions = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    clean = store_actions.add_parser(
        "clean",
        help="abort a store's incomplete multipart uploads (S3) left by killed writers",
        description=(
            "Every object pyarrow writes to S3 is a multipart upload; a writer killed mid-write leaves "
            "an incomplete one, billed and invisible to listings. This aborts those started more than "
            "--older-than hours ago (docs/maintenance.md has the bucket lifecycle rule that does it "
            "for good). Needs boto3 (pip install 'rmaunet[aws]')."
        ),
    )
    clean.add_argument("store", help="the results store, s3://bucket[/prefix]")
    clean.add_argument(
        "--older-than", type=float, default=24.0, help="hours an upload must be old (default 24: never a live one)"
    )
    clean.add_argument("--dry-run", action="store_true", help="list them, abort nothing")
    clean.set_defaults(func=run_clean)


def run_info(args: argparse.Namespace) -> int:
    from rmaunet import node_cache
    from rmaunet.storage import cache_root

    listed = node_cache.entries()
    entries = plural(len(listed), "entry", "entries")
    print(f"{cache_root()}: {_size(sum(e.size for e in listed))} in {entries} (cap {_cap()})")
    for entry in listed:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        state = "in use" if entry.in_use else ""
        print(f"  {entry.kind:<8} {_size(entry.size):>9}  {used}  {entry.path}  {state}".rstrip())
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from rmaunet import node_cache

    limit = node_cache.parse_size(args.max_size) if args.max_size else node_cache.max_size()
    removed = node_cache.prune(limit, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry in removed:
        print(f"{verb} {entry.kind} {_size(entry.size)} {entry.path}")
    left = sum(e.size for e in node_cache.entries())
    if args.dry_run:
        left -= sum(e.size for e in removed)
    entries = plural(len(removed), "entry", "entries")
    print(f"{verb} {entries} ({_size(sum(e.size for e in removed))}); {_size(left)} left")
    return 0


def run_clean(args: argparse.Namespace) -> int:
    from rmaunet import s3_api
    from rmaunet.errors import StoreError

    if not args.store.lower().startswith("s3://"):
        raise StoreError(f"{args.store}: store clean works on s3:// stores (no other keeps incomplete uploads)")
    if not s3_api.available(args.store):
        raise StoreError("store clean needs boto3: pip install 'rmaunet[aws]'")
    if args.older_than < 0:
        raise StoreError(f"--older-than {args.older_than}: hours cannot be negative")
    stale = s3_api.abort_stale_uploads(args.store, dt.timedelta(hours=args.older_than), dry_run=args.dry_run)
    verb = "would abort" if args.dry_run else "aborted"
    for upload in stale:
        print(f"{verb} the upload of {upload.key} (started {upload.initiated:%Y-%m-%d %H:%M} UTC)")
    print(f"{verb} {len(stale)} incomplete uploads under {args.store}")
    return 0


def _cap() -> str:
    from rmaunet import node_cache
    from rmaunet.errors import ConfigError

    try:
        return _size(node_cache.max_size())
    except ConfigError as exc:
        return f"unreadable: {exc}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
