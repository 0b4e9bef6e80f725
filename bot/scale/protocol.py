"""What the bot and `easel worker` processes say to each other through Redis.

Keys (one Redis database per bot):

- `easel:jobs`          stream, consumer group `workers`: one entry per hand-out, field `job`.
- `easel:jobs:<digest>` the same for jobs with LoRAs: one stream per set of LoRA files (name and
                        sha256), read only by workers that hold every file of the set.
- `easel:lora-sets`     hash: such a stream's name -> the JSON list of the [name, sha256] it needs.
- `easel:job:<id>`      hash, the job's truth in Redis: state, fingerprint, request (seed resolved),
                        source picture, entry id, worker, attempts, cancel flag, and at the end the
                        outcome (`meta` JSON and PNG bytes `image:0..`).  Expires (EASEL_RESULT_TTL_S).
- `easel:events`        stream, worker -> bot: `progress` (job, step, total) and `finished` (job, state).
- `easel:dead`          stream: jobs given up after EASEL_MAX_DELIVERIES deliveries.
- `easel:worker:<id>`   JSON announcement of a live worker (with its LoRA files: name -> sha256),
                        expires unless refreshed.

Every change of a job's state is one Lua script, so it is atomic: a job is handed out, begun,
cancelled or finished exactly once, and a late or duplicate worker can never overwrite an outcome.
The stream entry named in the hash is the only live one; stale entries are acknowledged and dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from bot.scale.scripts import BEGIN, CANCEL, CHECK, FINISH, FORGET, HEARTBEAT, SUBMIT, UNSERVED
from engine.errors import EngineError
from engine.request import DrawRequest
from storage.jobs import JobStatus

log = logging.getLogger(__name__)

JOBS = "easel:jobs"
GROUP = "workers"
EVENTS = "easel:events"
DEAD = "easel:dead"
WORKER_PREFIX = "easel:worker:"
LORA_SETS = "easel:lora-sets"
EVENTS_MAXLEN = 1000
# XAUTOCLAIM (a worker taking over a dead one's job) answers in three parts from Redis 7.0 on;
# 6.2 answers in two, and every take would fail.
MIN_REDIS = (7, 0)


def job_key(job_id: int) -> str:
    return f"easel:job:{job_id}"


# What a LoRA job needs from the worker that draws it: (name, sha256 of the file).  An empty hash
# takes any file of that name (the bot no longer has one to compare with: docs/SCALE_OUT.md).
Needs = tuple[tuple[str, str], ...]


def stream_for(needs: Needs) -> str:
    """The stream a job goes to: `easel:jobs` without LoRA, else the one stream of its set of files."""
    if not needs:
        return JOBS
    text = "\n".join(f"{name}={digest}" for name, digest in sorted(set(needs)))
    return f"{JOBS}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def serves(files: dict[str, str], needs: Needs) -> bool:
    """Whether a worker holding `files` (name -> sha256) has every file a job needs."""
    return all(name in files and (not digest or files[name] == digest) for name, digest in needs)


# A job's state in Redis is its state in the database (storage.jobs.JobStatus), the same five words.
TERMINAL = {JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED}


class WorkerLost(EngineError):
    """Every worker that took the job died with it (EASEL_MAX_DELIVERIES deliveries)."""

    key = "error.worker_lost"


class RedisTooOld(Exception):
    """The Redis server is older than `MIN_REDIS`: workers cannot take jobs from it."""

    def __init__(self, version: str) -> None:
        super().__init__(
            f"Redis {version} is too old: easel needs Redis {'.'.join(map(str, MIN_REDIS))} or newer "
            "(XAUTOCLAIM, to take over the jobs of dead workers); upgrade the server"
        )
        self.version = version


def too_old(version: str) -> bool:
    """Whether a server reporting `redis_version:<version>` lacks what the hand-off needs."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) < MIN_REDIS


def connect(url: str) -> Redis:
    """A client that fails fast: one immediate retry (a pooled connection Redis closed when it
    restarted), then the error, and the caller decides when to try again.  Every script is safe
    to run twice."""
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, retry=Retry(NoBackoff(), 1))


def fingerprint(job_id: int, request: DrawRequest) -> str:
    """Names one job's request, so a Redis that outlived a wiped bot database is not mistaken for it."""
    fields = request.to_dict()
    if fields.get("count") == 1:  # as before batches existed: jobs in Redis across an upgrade keep their print
        del fields["count"]
    text = json.dumps({"job": job_id, "request": fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker, as it announces itself."""

    id: str
    host: str
    device: str
    slots: int
    model: str = ""
    busy: int | None = None
    since: float = 0.0
    loras: dict[str, str] = field(default_factory=dict)  # its LoRA files: name -> sha256
    recipe: str = ""  # the weights it loaded for its card: none, int8 or int4 (engine/quantize.py)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: bytes | str) -> WorkerInfo:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Check:
    """A job's state in Redis; `entry_alive` says its stream entry still exists."""

    state: JobStatus
    fingerprint: str | None
    entry_alive: bool


@dataclass(frozen=True)
class Handout:
    """A stream entry a worker took: which job, and how many times the entry has been delivered."""

    entry: str
    job_id: int | None
    deliveries: int = 1
    stream: str = JOBS


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Broker:
    """Typed calls over one Redis client, shared by the bot's pool and the worker process."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._submit = redis.register_script(SUBMIT)
        self._check = redis.register_script(CHECK)
        self._begin = redis.register_script(BEGIN)
        self._finish = redis.register_script(FINISH)
        self._cancel = redis.register_script(CANCEL)
        self._heartbeat = redis.register_script(HEARTBEAT)
        self._forget = redis.register_script(FORGET)
        self._unserved = redis.register_script(UNSERVED)

    async def check_server(self) -> str:
        """The server's version; raises `RedisTooOld` when the hand-off cannot work on it."""
        info = await self.redis.info("server")
        version = str(info.get("redis_version", "0"))
        if too_old(version):
            raise RedisTooOld(version)
        return version

    async def ensure_group(self, stream: str = JOBS) -> None:
        """Create the stream and its group if missing (a fresh or restarted Redis)."""
        try:
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- the bot's side --------------------------------------------------------------------------

    async def submit(
        self,
        job_id: int,
        print_: str,
        request: DrawRequest,
        source: bytes,
        ttl: int,
        force: bool = False,
        stream: str = JOBS,
    ) -> str:
        """Hand the job out unless this very job is already in Redis; 'new' or its current state."""
        payload = json.dumps(request.to_dict())
        args = [job_id, print_, payload, source, ttl, "1" if force else "0"]
        return _text(await self._submit(keys=[job_key(job_id), stream], args=args))

    async def stream_of(self, job_id: int) -> str | None:
        """The stream a job already in Redis was handed out on (None: not there, or an older bot's)."""
        stream = await self.redis.hget(job_key(job_id), "stream")
        return _text(stream) if stream is not None else None

    async def register_needs(self, stream: str, needs: Needs) -> None:
        """Tell the workers that `stream` exists and which files it needs (before its first entry)."""
        await self.ensure_group(stream)
        await self.redis.hset(LORA_SETS, stream, json.dumps(sorted(needs)))

    async def lora_sets(self) -> dict[str, Needs]:
        """Every LoRA stream the bot has used: its name -> the files it needs."""
        sets = {}
        for stream, text in (await self.redis.hgetall(LORA_SETS)).items():
            try:
                sets[_text(stream)] = tuple((str(name), str(digest)) for name, digest in json.loads(text))
            except (ValueError, TypeError):
                log.warning("ignoring an unreadable LoRA set: %.200r", text)
        return sets

    async def unserved(self, job_id: int, stream: str, meta: dict[str, Any], ttl: int, min_idle_ms: int) -> bool:
        """Fail a job no live worker can draw: True when it was still waiting, or running on a worker
        that stopped heartbeating it; False when a worker is drawing it (or it has finished)."""
        args = [job_id, GROUP, json.dumps(meta), ttl, min_idle_ms]
        return bool(await self._unserved(keys=[job_key(job_id), stream, EVENTS], args=args))

    async def check(self, job_id: int, stream: str = JOBS) -> Check | None:
        """The job's state in Redis, or None when Redis has no such job (lost, or never handed out)."""
        answer = await self._check(keys=[job_key(job_id), stream])
        if not answer:
            return None
        return Check(JobStatus(_text(answer[0])), _text(answer[1]), bool(answer[2]))

    async def outcome(self, job_id: int) -> dict[bytes, bytes]:
        return await self.redis.hgetall(job_key(job_id))

    async def keep_for(self, job_id: int, seconds: int) -> None:
        await self.redis.expire(job_key(job_id), seconds)

    async def cancel(self, job_id: int, stream: str = JOBS) -> int:
        return int(await self._cancel(keys=[job_key(job_id), stream, EVENTS], args=[job_id, GROUP]))

    async def overdue(self, min_idle_ms: int, min_deliveries: int, stream: str = JOBS) -> list[Handout]:
        """Entries idle that long (their worker stopped heartbeating) delivered that many times."""
        pending = await self.redis.xpending_range(stream, GROUP, "-", "+", 100, idle=min_idle_ms)
        found = []
        for item in pending:
            if item["times_delivered"] >= min_deliveries:
                entry = _text(item["message_id"])
                found.append(Handout(entry, await self._job_of(entry, stream), item["times_delivered"], stream))
        return found

    async def workers(self) -> list[WorkerInfo]:
        keys = [key async for key in self.redis.scan_iter(match=WORKER_PREFIX + "*", count=100)]
        values = await self.redis.mget(keys) if keys else []
        workers = []
        for value in values:
            if not value:
                continue
            try:
                workers.append(WorkerInfo.from_json(value))
            except (ValueError, TypeError, KeyError):
                # A worker of another version, or garbage: it cannot be counted on for a slot.
                log.warning("ignoring an unreadable worker announcement: %.200r", value)
        return sorted(workers, key=lambda info: info.id)

    async def last_event_id(self) -> str:
        last = await self.redis.xrevrange(EVENTS, count=1)
        return _text(last[0][0]) if last else "0-0"

    async def read_events(self, after: str, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        answer = await self.redis.xread({EVENTS: after}, count=100, block=block_ms)
        return [
            (_text(entry), {_text(k): _text(v) for k, v in fields.items()})
            for _, entries in answer or []
            for entry, fields in entries
        ]

    async def forget_consumers(self, live: set[str], min_idle_ms: int, stream: str = JOBS) -> None:
        """Drop group consumers of workers long gone that hold nothing (restarts make new names)."""
        for consumer in await self.redis.xinfo_consumers(stream, GROUP):
            name = _text(consumer["name"])
            if consumer["pending"] == 0 and consumer["idle"] >= min_idle_ms and name not in live:
                await self._forget(keys=[stream], args=[GROUP, name])

    # -- the worker's side -----------------------------------------------------------------------

    async def claim_stale(self, consumer: str, min_idle_ms: int, stream: str = JOBS) -> Handout | None:
        """Take over one entry whose worker stopped heartbeating (XAUTOCLAIM)."""
        # XAUTOCLAIM scans at most COUNT x 10 pending entries per call: follow the cursor, or a dead
        # worker's job behind many busy ones would not be found.
        start = "0-0"
        while True:
            cursor, claimed, _ = await self.redis.xautoclaim(stream, GROUP, consumer, min_idle_ms, start, count=1)
            if claimed:
                break
            start = _text(cursor)
            if start == "0-0":
                return None
        entry, fields = claimed[0]
        entry = _text(entry)
        pending = await self.redis.xpending_range(stream, GROUP, entry, entry, 1)
        deliveries = pending[0]["times_delivered"] if pending else 1
        return Handout(entry, _job_id(fields), deliveries, stream)

    async def read_new(self, consumer: str, block_ms: int | None, stream: str = JOBS) -> Handout | None:
        """The next new entry of one stream; `block_ms` None answers at once."""
        answer = await self.redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=1, block=block_ms)
        for _, entries in answer or []:
            for entry, fields in entries:
                return Handout(_text(entry), _job_id(fields), stream=stream)
        return None

    async def begin(self, handout: Handout, worker_id: str) -> tuple[str, bytes | None, bytes | None]:
        """('run', request JSON, source PNG or None) or (why not, None, None)."""
        answer = await self._begin(
            keys=[job_key(handout.job_id), handout.stream, EVENTS],
            args=[handout.entry, GROUP, worker_id, handout.job_id, time.time()],
        )
        verdict = _text(answer[0])
        if verdict != "run":
            return verdict, None, None
        return verdict, answer[1], answer[2] or None

    async def finish(
        self,
        handout: Handout,
        state: JobStatus,
        meta: dict[str, Any],
        images: list[bytes],
        ttl: int,
        dead_reason: str = "",
    ) -> bool:
        """Record the outcome, acknowledge the entry and tell the bot; False if it was decided already."""
        if handout.job_id is None:
            await self.drop(handout.entry, handout.stream)
            return False
        decided = await self._finish(
            keys=[job_key(handout.job_id), handout.stream, EVENTS, DEAD],
            args=[handout.entry, GROUP, handout.job_id, state.value, json.dumps(meta, default=str), ttl,
                  dead_reason, *images],
        )  # fmt: skip
        return bool(decided)

    async def dead_letter(self, handout: Handout, ttl: int) -> bool:
        meta = {"error_key": WorkerLost.key, "error_params": {"job_id": handout.job_id}}
        reason = f"delivered {handout.deliveries} times; every worker that took it stopped"
        return await self.finish(handout, JobStatus.FAILED, meta, [], ttl, dead_reason=reason)

    async def drop(self, entry: str, stream: str = JOBS) -> None:
        await self.redis.xack(stream, GROUP, entry)
        await self.redis.xdel(stream, entry)

    async def heartbeat(self, handout: Handout, consumer: str, beat: bool) -> int:
        return int(
            await self._heartbeat(
                keys=[handout.stream, job_key(handout.job_id)],
                args=[GROUP, consumer, handout.entry, "1" if beat else "0"],
            )
        )

    async def progress(self, job_id: int, step: int, total: int) -> None:
        fields = {"type": "progress", "job": job_id, "step": step, "total": total}
        await self.redis.xadd(EVENTS, fields, maxlen=EVENTS_MAXLEN, approximate=True)

    async def announce(self, info: WorkerInfo, ttl_s: float) -> None:
        await self.redis.set(WORKER_PREFIX + info.id, info.to_json(), px=int(ttl_s * 1000))

    async def withdraw(self, worker_id: str) -> None:
        await self.redis.delete(WORKER_PREFIX + worker_id)

    async def _job_of(self, entry: str, stream: str = JOBS) -> int | None:
        found = await self.redis.xrange(stream, entry, entry, count=1)
        return _job_id(found[0][1]) if found else None


def _job_id(fields: dict) -> int | None:
    value = fields.get(b"job", fields.get("job"))
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
