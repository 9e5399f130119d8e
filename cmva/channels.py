"""Serving channels: what `prod`, `staging`… serve is one published run's artifacts, copied on promotion.

Layout in the store the pipeline publishes to (`store_uri`, e.g. `s3://cmva/serving`):

    <store>/<run id>/{base,rewards,agents/<v>,aggregator,release}/     one run, as published
    <store>/channels/<channel>/{base,rewards,agents/<v>,aggregator,release}/    a copy of one run

A channel is a plain prefix of artifacts, so KServe's storage initializer downloads it like any other
`storageUri` (`s3://cmva/serving/channels/prod`) and `cmva serve --artifacts` takes it too. Its `release`
artifact records which run it holds and the content digest of each artifact. Promotion first marks the
channel `promoting`, copies the run's artifacts (unchanged ones are skipped), removes artifacts the run does
not have, then marks it `ready`; a server refuses a channel that is not `ready` or whose artifacts do not match
the record, so it never serves a mix of two runs. Rollback is promoting the older run again.

Example:
    >>> promote("s3://cmva/serving", "3f2a…", "prod")            # doctest: +SKIP
    >>> served_run("s3://cmva/serving/channels/prod", root)     # doctest: +SKIP
    '3f2a…'
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from pathlib import Path

from cmva.storage import MANIFEST, SERVED, LocalStore, S3Store, StorageError, open_serving, open_store

log = logging.getLogger(__name__)

RELEASE = "release"  # the record's artifact name in a run or channel prefix (not a served artifact)
RELEASE_FILE = "release.json"
CHANNELS = "channels"
_CHANNEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_RUN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ChannelError(StorageError):
    """A channel that cannot be served as one run: mid-promotion, or its artifacts do not match its record."""


def check_channel(channel: str) -> str:
    if not _CHANNEL_RE.match(channel or ""):
        raise ValueError(f"invalid channel {channel!r}: lowercase letters, digits and '-', e.g. prod or staging")
    return channel


def check_run_id(run_id: str) -> str:
    if not _RUN_RE.match(run_id or ""):
        raise ValueError(f"invalid run id {run_id!r}: letters, digits, '.', '_' and '-' only")
    return run_id


def run_uri(store_uri: str, run_id: str) -> str:
    """Where the pipeline publishes run `run_id`."""
    return f"{str(store_uri).rstrip('/')}/{check_run_id(run_id)}"


def channel_uri(store_uri: str, channel: str) -> str:
    """The prefix a channel's InferenceServices (`storageUri`) and `cmva serve --artifacts` read."""
    return f"{str(store_uri).rstrip('/')}/{CHANNELS}/{check_channel(channel)}"


def manifest_digest(manifest: dict) -> str:
    """Digest of an artifact's content: its manifest's file list (paths, sha256, sizes), not its timestamp."""
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()


def files_digest(artifact_dir: Path) -> str:
    """`manifest_digest` of a local artifact directory."""
    return manifest_digest(json.loads((Path(artifact_dir) / MANIFEST).read_text()))


def local_served_names(root: Path) -> list[str]:
    """The served artifacts (base, rewards, aggregator, agents/<v>) present under a local root."""
    names = [n for n in SERVED if (root / n / MANIFEST).is_file()]
    if (root / "agents").is_dir():
        names += sorted(f"agents/{d.name}" for d in (root / "agents").iterdir() if (d / MANIFEST).is_file())
    return names


def _store_served_names(store) -> list[str]:
    """The served artifacts a store holds now (none when it is empty or absent)."""
    if isinstance(store, LocalStore):
        return local_served_names(store.root) if store.root.is_dir() else []
    prefix = f"{store.prefix}/" if store.prefix else ""
    if not store._call("check the bucket", store.client.bucket_exists, store.bucket):
        return []
    names = set()
    for key in store._list(prefix):
        parts = key[len(prefix) :].split("/")
        if parts[-1] != MANIFEST:
            continue
        if len(parts) == 2 and parts[0] in SERVED:
            names.add(parts[0])
        elif len(parts) == 3 and parts[0] == "agents":
            names.add(f"agents/{parts[1]}")
    return sorted(names)


def _manifest_digest(store, name: str) -> str | None:
    """`files_digest` of artifact `name` in the store, without downloading it; None when absent."""
    if isinstance(store, LocalStore):
        d = store.root / name
        return files_digest(d) if (d / MANIFEST).is_file() else None
    manifest = store._read_manifest(name)
    return manifest_digest(manifest) if manifest else None


def _remove_artifact(store, name: str) -> None:
    """Delete artifact `name`: its manifest first (it stops existing at once), then its files."""
    from cmva.atomic import remove_tree

    if isinstance(store, LocalStore):
        link = store.root / name
        version = store._version_of(link)
        remove_tree(link)
        if version is not None:
            remove_tree(version)
        return
    assert isinstance(store, S3Store)
    base = store._key(name)
    store._call(f"remove {base}/{MANIFEST}", store.client.remove_object, store.bucket, f"{base}/{MANIFEST}")
    for key in store._list(base + "/"):
        store._call(f"remove {key}", store.client.remove_object, store.bucket, key)


def read_release(uri: str | Path) -> dict | None:
    """The release record of a run or channel prefix (local, s3:// or KServe's /mnt/models); None if it has none."""
    store = open_store(uri)
    if not store.exists(RELEASE):
        return None
    return json.loads((store.get(RELEASE) / RELEASE_FILE).read_text())


def write_release(store, record: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="cmva-release-") as tmp:
        (Path(tmp) / RELEASE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        store.publish(Path(tmp), RELEASE, overwrite=True)


def record_run(store_uri: str, run_id: str, manifests: dict[str, dict]) -> dict:
    """Write the release record of run `<store>/<run id>/` from its artifacts' manifests (`publish_op` calls it)."""
    record = _record(run_id, run_uri(store_uri, run_id), None, {n: manifest_digest(m) for n, m in manifests.items()})
    record["state"] = "ready"
    write_release(open_store(run_uri(store_uri, run_id)), record)
    return record


def _record(run_id: str, source: str, channel: str | None, digests: dict[str, str]) -> dict:
    return {
        "format": 1,
        "run_id": run_id,
        "channel": channel,
        "source": source,
        "state": "promoting",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifacts": dict(sorted(digests.items())),
    }


def promote(store_uri: str, run_id: str, channel: str) -> dict:
    """Make `channel` serve run `run_id`'s published artifacts; returns the channel's new release record.

    The run's artifacts are verified against their manifests first; unchanged artifacts are not copied again.
    Rollback: promote the older run.

    Raises:
        cmva.storage.ArtifactNotFoundError: The run was not published (or is incomplete) under `store_uri`.
    """
    src_uri, dst_uri = run_uri(store_uri, run_id), channel_uri(store_uri, channel)
    root = open_serving(src_uri)  # every served artifact verified (s3: fetched into the local cache)
    dst = open_store(dst_uri)
    previous = read_release(dst_uri)
    record = _record(run_id, src_uri, channel, {n: files_digest(root / n) for n in local_served_names(root)})
    record["previous_run_id"] = previous.get("run_id") if previous else None
    write_release(dst, record)  # from here until "ready", servers refuse the channel
    copied = []
    for name, digest in record["artifacts"].items():
        if _manifest_digest(dst, name) != digest:
            dst.publish(root / name, name, overwrite=True)
            copied.append(name)
    for name in set(_store_served_names(dst)) - set(record["artifacts"]):
        _remove_artifact(dst, name)  # e.g. an agent the older run had and this one has not
    record["state"] = "ready"
    write_release(dst, record)
    log.info("channel %s now serves run %s (copied %s; was %s)", channel, run_id, copied, record["previous_run_id"])
    return record


def served_run(uri: str | Path, root: Path) -> str | None:
    """The run id the artifacts at `uri` (loaded into local `root`) belong to; None when `uri` has no record.

    Raises:
        ChannelError: The channel is mid-promotion, or an artifact under `root` is not the recorded run's.
    """
    record = read_release(uri)
    if record is None:
        return None
    where = f"{record.get('channel') or 'run'} at {uri}"
    if record.get("state") != "ready":
        raise ChannelError(
            f"{where} is being promoted to run {record.get('run_id')} (since {record.get('time')}): it is served "
            "once the promotion has finished; if that promotion died, promote a run again"
        )
    expected, names = record["artifacts"], local_served_names(Path(root))
    if set(names) != set(expected):
        raise ChannelError(
            f"{where}: artifacts {sorted(names)} differ from run {record['run_id']}'s {sorted(expected)}"
        )
    for name in names:
        if files_digest(Path(root) / name) != expected[name]:
            raise ChannelError(f"{where}: {name} is not run {record['run_id']}'s (promotion under way?); promote again")
    return record["run_id"]
