"""`listings demo`: the main job on the embedded local stack, and the model lifecycle live.

1. The stack comes up while a model is made ready: the full default model when the cache has it, otherwise a
   quick one (about a minute and a half on two free cores), so the first listing is classified within minutes.
2. One worker classifies held-out real listings (plus a few malformed events) streamed at a steady rate; the view
   shows the rate, dead-letter and review counts, latency, accuracy so far against the true categories, and the
   latest classifications.
3. Whenever the served model is not the full one for this code and data (the first run, a first run stopped before
   its promotion, a change to the training code) — and with `--rehearse`, every time — the demo trains the full
   one in the background (its progress is in the view; at once when cached). When it is ready it is exported as a
   new version, **shadowed** on the live stream (agreement with the live version), **promoted** (the worker
   follows without a restart), and the catalogue is **re-classified** by a governed backfill while the accuracy
   moves.
It stops only what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from devtools.config import StackSettings
from devtools.stack import control
from devtools.stats import percentile
from stream import connections, keys
from stream.config import Settings
from stream.pipeline.records import stored_path
from stream.timefmt import iso_ms

HELP = "the main job on the local stack (what `make demo` runs)"
SHADOW_SECONDS = 40.0
REHEARSAL_SEED = 14  # --rehearse: the second quick model's seed (differs from the first model's, 13)
PLAIN_EVERY_S = 15.0  # without a terminal: one status line this often


@dataclass(frozen=True)
class DemoOptions:
    events: int = 3000  # held-out listings to stream (cycled while the full model trains)
    rate: float = 0.0  # produce rate, events/s (0: as fast as possible once; a steady 10/s while training)
    quick: bool = False  # stop after the quick model's phase (no full training, no lifecycle)
    rehearse: bool = False  # the lifecycle with a second quick model instead of the full one (minutes, for checks)


def malformed_events(n: int) -> list[bytes]:
    samples = [b"{not json", b"[]", b'{"item_id": "x"}', b'{"item_id": "y", "title": "   "}', b"\xff\xfe"]
    return [samples[i % len(samples)] for i in range(n)]


def _scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus counters we show (unlabelled sums)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name, value = line.rsplit(" ", 1)
                base = name.split("{", 1)[0]
                out[base] = out.get(base, 0.0) + float(value)
    except OSError:
        pass
    return out


class Progress:
    """What the live view shows, read from Redis (results) and the worker's metrics. Only results stored from
    `since_ms` (epoch ms) on count: the local stack keeps its Redis between runs, and a second demo must not count
    the first one's results as its own."""

    def __init__(self, settings: Settings, rows: list[dict[str, Any]], metrics_port: int, since_ms: int = 0) -> None:
        self.r = connections.redis_sync(settings.redis, decode_responses=True)
        self.rows = {row["item_id"]: row for row in rows}
        self.metrics_port = metrics_port
        self.since_ms = since_ms
        self.state: dict[str, dict[str, str]] = {}
        self.first_at: float | None = None
        self.latencies: deque[float] = deque(maxlen=2000)
        self.history: deque[tuple[float, int]] = deque(maxlen=20)
        self.examples: deque[dict[str, str]] = deque(maxlen=5)
        self.stage = "starting"
        self.lifecycle: list[str] = []

    def poll(self) -> None:
        fields = [
            "listing_version",
            "classified_at",
            "event_time",
            "category_path",
            "confidence",
            "tags",
            "title",
            "model_version",
        ]
        ids = list(self.rows)
        pipe = self.r.pipeline(transaction=False)
        for iid in ids:
            pipe.hmget(keys.listing(iid), fields)
        for iid, vals in zip(ids, pipe.execute(), strict=True):
            h = dict(zip(fields, vals, strict=True))
            if not h["classified_at"] or iso_ms(h["classified_at"]) < self.since_ms:
                continue
            old = self.state.get(iid)
            if old is None or old["classified_at"] != h["classified_at"]:
                if self.first_at is None:
                    self.first_at = time.monotonic()
                if h["event_time"]:
                    self.latencies.append(iso_ms(h["classified_at"]) - iso_ms(h["event_time"]))
                self.examples.append(h)
            self.state[iid] = h
        self.history.append((time.monotonic(), len(self.state)))

    def rate(self) -> float:
        if len(self.history) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.history[0], self.history[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def accuracy(self, version: str | None = None) -> tuple[float, float, int]:
        top = leaf = scored = 0
        for iid, h in self.state.items():
            truth = self.rows[iid].get("true_category")
            if not truth or not h["category_path"] or (version and h["model_version"] != version):
                continue
            want = tuple(p.strip() for p in truth.split(">") if p.strip())
            got = tuple(stored_path(h["category_path"]))
            scored += 1
            top += got[:1] == want[:1]
            leaf += got == want
        return (top / scored if scored else float("nan"), leaf / scored if scored else float("nan"), scored)

    def by_version(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.state.values():
            out[h["model_version"]] = out.get(h["model_version"], 0) + 1
        return out

    def status_line(self) -> str:
        """The live view's main figures on one line (for output that is not a terminal)."""
        top, leaf, scored = self.accuracy()
        line = f"{self.stage} | {len(self.state)} classified at {self.rate():.0f}/s"
        if self.latencies:
            line += f" | produce→Redis p99 {percentile(list(self.latencies), 99):.0f} ms"
        if scored:
            line += f" | top level {top:.1%}, leaf {leaf:.1%} of {scored}"
        return line

    def render(self, produced: int) -> Any:
        from rich.console import Group
        from rich.table import Table

        m = _scrape(self.metrics_port)
        batches = m.get("listings_batch_size_count", 0.0)
        mean_batch = m.get("listings_batch_size_sum", 0.0) / batches if batches else 0.0
        top, leaf, scored = self.accuracy()
        lat = list(self.latencies)
        stats = Table(title="listing-classifier demo", show_header=False, expand=False)
        stats.add_row("now", self.stage)
        stats.add_row("produced", f"{produced}")
        stats.add_row("classified (in Redis)", f"{len(self.state)} items  at {self.rate():.0f}/s")
        stats.add_row("by model version", ", ".join(f"v{v}: {n}" for v, n in sorted(self.by_version().items())))
        stats.add_row("dead-lettered", f"{m.get('listings_dlq_total', 0):.0f}")
        stats.add_row("sent to review", f"{m.get('listings_review_total', 0):.0f}")
        stats.add_row("Triton batches", f"{batches:.0f}  mean size {mean_batch:.1f}")
        stats.add_row("latency produce→Redis", "  ".join(f"p{q} {percentile(lat, q):.0f} ms" for q in (50, 95, 99)))
        stats.add_row("accuracy so far", f"top level {top:.1%}  leaf {leaf:.1%}  of {scored}")
        for line in self.lifecycle[-6:]:
            stats.add_row("lifecycle", line)
        ex = Table(title="latest classifications", expand=False)
        for col in ("title", "category", "conf", "v", "tags"):
            ex.add_column(col, overflow="fold")
        for h in list(self.examples):
            tags = ", ".join(orjson.loads(h["tags"] or "[]")) or "-"
            ex.add_row(
                (h["title"] or "")[:60],
                h["category_path"] or "",
                f"{float(h['confidence'] or 0):.2f}",
                h["model_version"] or "",
                tags,
            )
        return Group(stats, ex)


class PlainLog:
    """For output that is not a terminal (a log file, a pipe, CI), where rich's live view draws nothing until it
    stops: a status line every `every_s` seconds, and each lifecycle step once, as it happens."""

    def __init__(self, echo: Callable[[str], None], every_s: float = PLAIN_EVERY_S) -> None:
        self.echo = echo
        self.every_s = every_s
        self.last: float | None = None
        self.shown = 0

    def update(self, status: Callable[[], str], lifecycle: list[str], now: float) -> None:
        for line in lifecycle[self.shown :]:
            self.echo(f"lifecycle: {line}")
        self.shown = len(lifecycle)
        if self.last is None or now - self.last >= self.every_s:
            self.echo(status())
            self.last = now


class Feeder:
    """Streams the held-out listings: once as fast as asked, then (while a full model trains) a steady trickle of
    newer edits, so the lifecycle plays on live traffic."""

    def __init__(self, settings: Settings, rows: list[dict[str, Any]], rate: float) -> None:
        self.settings = settings
        self.rows = rows
        self.rate = rate
        self.produced = 0
        self.keep_going = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        from devtools.workers import produce_raw
        from stream.produce import produce_listings

        produce_raw(self.settings, [(None, b) for b in malformed_events(max(1, len(self.rows) // 200))])
        version = int(time.time())
        summary = produce_listings(self.settings, self.rows, rate=self.rate, progress=False, listing_version=version)
        self.produced += summary["sent"]
        i = 0
        while self.keep_going.is_set() and not self.stop.is_set():
            chunk = [self.rows[(i + k) % len(self.rows)] for k in range(10)]
            version += 1
            self.produced += produce_listings(self.settings, chunk, progress=False, listing_version=version)["sent"]
            i += 10
            self.stop.wait(1.0)


def full_model_cached(stack: StackSettings) -> Path | None:
    from training import artifact, train

    opts = train.options(train.default_data(stack.data_dir))
    path = artifact.cache_path(stack.cache_dir, artifact.cache_key(opts.data.files(), opts.as_dict()))
    return path if artifact.complete(path) else None


@dataclass(frozen=True)
class Plan:
    first_model: str | None  # what to export before serving: "cached" (the full model), "quick", or None (served)
    lifecycle: bool  # bring a new model in live: export, shadow, promote, re-classify


def plan(cached: str | None, newest: str | None, options: DemoOptions, live: str | None = None) -> Plan:
    """What the demo does, from the cached full model's artifact name (None: not trained for this code and data),
    the artifact the newest exported version holds (None: no version yet) and the one the live version holds (the
    version Redis' live record names; None: no record, the newest serves).
    The lifecycle plays whenever the served model is not the current full one — the first run, a first run stopped
    before its promotion (the repository holds only the quick model, or the full one exported but not promoted),
    or a change to the training code — and, with `--rehearse`, every time; never with `--quick`."""
    if newest is None:
        first = "cached" if cached is not None and not options.rehearse else "quick"
        served = cached if first == "cached" else None
    else:
        first = None
        served = live if live is not None else newest
    lifecycle = not options.quick and (options.rehearse or cached is None or served != cached)
    return Plan(first, lifecycle)


def incoming(options: DemoOptions) -> str:
    """The model the lifecycle brings in, as the view names it."""
    return "rehearsal model" if options.rehearse else "full model"


def exported_artifact(repo: Path, version: int) -> str | None:
    """The artifact (cache entry name) a version was exported from (its `export.json`), or None."""
    from training.config import MODEL_NAME

    try:
        doc = orjson.loads((Path(repo) / MODEL_NAME / str(version) / "export.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return str(doc.get("artifact") or "") or None


def artifact_name(repo: Path, version: int) -> str:
    """The artifact a version holds; "unknown" without its export record (so not known to be the full model)."""
    return exported_artifact(repo, version) or "unknown"


def pending_candidate(repo: Path, live: str, artifact: str) -> int | None:
    """A version newer than the live one, already exported from `artifact`: a run stopped between that export and
    its promotion left it, and promoting it needs no second copy."""
    from training import export

    newer = [v for v in export.versions(repo) if not live.isdigit() or v > int(live)]
    return next((v for v in reversed(newer) if exported_artifact(repo, v) == artifact), None)


def training_status(log: Path) -> str:
    """The background training's progress, from its log."""
    try:
        text = log.read_text(errors="replace")[-4000:]
    except OSError:
        return "starting"
    bars = re.findall(r"epoch (\d+)/(\d+):\s+(\d+)%", text)
    if bars:
        e, n, pct = bars[-1]
        return f"epoch {e}/{n} ({pct}%)"
    if "fusion (dev)" in text:
        return "fusion, engines and report"
    return "preparing data"


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """The ONNX export's tracer and quantizer warnings are for model developers, not for the demo's viewer."""
    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


class Job(threading.Thread):
    """A thread whose failure is not lost: `result()` joins it and raises what it raised (a plain thread only
    prints the traceback, and the demo went on without, e.g., Kafka)."""

    def __init__(self, target: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.call = lambda: target(*args, **kwargs)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.call()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever calls result()
            self.error = exc

    def result(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM (a `kill`, a CI timeout) ends the demo as Ctrl-C does, with SystemExit, so that what it started is
    stopped; a second SIGTERM during that clean-up is ignored. The previous handler is back afterwards. Outside the
    main thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, lambda *_: None)  # a handler, not SIG_IGN: what starts now must not inherit it
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    """A loopback port free now: the demo's worker serves its metrics there (a fixed port may be another's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Started:
    """What the demo started, stopped by `stop()` however the demo ends (error, Ctrl-C, SIGTERM): the feeder, the
    background training, the worker, and the parts of the stack that were not running before it."""

    def __init__(self, stack: StackSettings, before: dict[str, dict[str, object]]) -> None:
        self.stack = stack
        self.before = before  # control.status() as the demo began
        self.bring_up: Job | None = None
        self.feeder: Feeder | None = None
        self.feeding: threading.Thread | None = None
        self.trainer: subprocess.Popen[bytes] | None = None
        self.worker: Any = None  # a devtools.workers.WorkerProcess

    def stop(self, echo: Callable[[str], None]) -> None:
        if self.feeder is not None:
            self.feeder.stop.set()
        if self.feeding is not None:
            self.feeding.join(30)  # its producer closes before Kafka stops
        if self.trainer is not None and self.trainer.poll() is None:
            self.trainer.terminate()
            try:
                self.trainer.wait(30)
            except subprocess.TimeoutExpired:
                self.trainer.kill()
        if self.worker is not None:
            self.worker.stop()
        if self.bring_up is not None and self.bring_up.ident is not None:
            self.bring_up.join()  # a part still starting is stopped once it has its pid file
        mine = [name for name, st in self.before.items() if not st["running"]]
        if mine:
            control.down(self.stack, mine, echo=echo)


def demo(stack: StackSettings, base: Settings, options: DemoOptions) -> int:
    from rich.console import Console

    console = Console()
    console.soft_wrap = not console.is_terminal  # a log's lines are not cut at 80 columns
    started = Started(stack, control.status(stack))
    with sigterm_exits():
        try:
            return _demo(stack, base, options, console, started)
        except RuntimeError as exc:  # StackError included
            console.print(str(exc), style="red", markup=False, highlight=False)
            return 1
        finally:
            started.stop(console.print)


def served_version(existing: list[int], live: str) -> int | None:
    """The version workers serve: the live record's (`live`, "" for none) when the repository has it, else the
    newest; None without versions."""
    if live.isdigit() and int(live) in existing:
        return int(live)
    return existing[-1] if existing else None


def read_live_version(settings: Settings) -> str:
    """The live record's version in Redis ("" when none was promoted)."""
    from stream import models

    r = connections.redis_sync(settings.redis, decode_responses=True)
    try:
        return models.read_live(r, settings.triton.model_name).version
    finally:
        r.close()


def make_first_model(stack: StackSettings, todo: Plan, cached: Path | None, options: DemoOptions, echo: Any) -> None:
    """Export the model the demo starts on when the repository has none: the cached full one, or a quick one."""
    from training import export, train

    if todo.first_model == "cached" and cached is not None:
        echo("exporting the cached full model")
        export.export(cached, stack.model_repository)
    elif todo.first_model == "quick":
        if todo.lifecycle:
            echo(f"training a quick model first (the {incoming(options)} follows in the background)")
        else:
            echo("training a quick model (--quick: no full model, no lifecycle)")
        with quiet_export():
            quick = train.train_or_reuse(stack, train.options(train.default_data(stack.data_dir), quick=True))
        export.export(quick, stack.model_repository)


def _demo(stack: StackSettings, base: Settings, options: DemoOptions, console: Any, started: Started) -> int:
    from rich.live import Live

    from devtools.heldout import held_out_listings
    from devtools.stack import triton
    from devtools.workers import WorkerProcess, wait_group_stable
    from stream import models
    from training import export

    settings = stack.runtime(base)
    t_start = time.monotonic()
    cached = full_model_cached(stack)
    existing = export.versions(stack.model_repository)

    # Kafka comes up while the first model is made ready; Redis first (it holds the live record the plan needs);
    # Triton once it has a version
    started.bring_up = Job(control.up, stack, ["kafka"], echo=console.print)
    started.bring_up.start()
    control.up(stack, ["redis"], echo=console.print)
    served = served_version(existing, read_live_version(settings))
    # a version without its export record is not known to be the full model
    newest = artifact_name(stack.model_repository, existing[-1]) if existing else None
    live = artifact_name(stack.model_repository, served) if served is not None else None
    todo = plan(cached.name if cached else None, newest, options, live=live)
    lifecycle = todo.lifecycle
    make_first_model(stack, todo, cached, options, console.print)
    if todo.first_model is None and lifecycle:
        what = "a second quick model (--rehearse)" if options.rehearse else "the full model for this code and data"
        console.print(f"serving v{served}; {what} follows, then shadow, promotion and re-classification")
    started.bring_up.result()
    control.up(stack, echo=console.print)
    if started.before["triton"]["running"]:
        # a Triton that was already up picks the model (and the backfill's copy of it) up
        triton.load_model(stack, settings.triton.model_name, with_background=True)
    live_version = str(served if served is not None else export.versions(stack.model_repository)[-1])

    rows = held_out_listings(stack.data_dir, options.events)
    metrics_port = free_port()
    started.worker = worker = WorkerProcess(settings, stack.log_dir, name="demo-worker", metrics_port=metrics_port)
    worker.start()
    train_log = stack.log_dir / "demo-train.log"
    progress = Progress(settings, rows, metrics_port, since_ms=int(time.time() * 1000))
    # a steady 10/s while a model trains (the first pass would otherwise be over long before it is ready)
    trains = lifecycle and (cached is None or options.rehearse)
    started.feeder = feeder = Feeder(settings, rows, options.rate or (10.0 if trains else 0.0))
    wait_group_stable(settings, workers=[worker])
    if lifecycle:
        feeder.keep_going.set()
        with open(train_log, "wb") as log:
            started.trainer = subprocess.Popen(
                [sys.executable, "-m", "stream", "train", "--no-export", *full_args(options)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    trainer = started.trainer
    started.feeding = threading.Thread(target=feeder.run, daemon=True)
    started.feeding.start()
    plain = None if console.is_terminal else PlainLog(console.print)
    with Live(progress.render(0), console=console, refresh_per_second=2) as view:

        def tick(stage: str) -> None:
            progress.stage = stage
            progress.poll()
            view.update(progress.render(feeder.produced))
            if plain is not None:
                plain.update(progress.status_line, progress.lifecycle, time.monotonic())
            if not worker.alive():
                raise RuntimeError(f"the worker exited; its log:\n{worker.log_tail()}")

        def serving() -> str:
            training = f"; {incoming(options)}: {training_status(train_log)}" if trainer else ""
            return f"serving v{live_version}{training}"

        while len(progress.state) < len(rows):
            tick(serving())
            time.sleep(1)
            if time.monotonic() - t_start > 3600:
                raise RuntimeError("gave up after an hour")
        first = progress.first_at - t_start if progress.first_at else float("nan")
        progress.lifecycle.append(f"first listing classified {first:.0f}s after start; all {len(rows)} done")
        if trainer is not None:
            while trainer.poll() is None:
                tick(serving())
                time.sleep(2)
            if trainer.returncode != 0:
                raise RuntimeError(f"full training failed; see {train_log}")
            run_lifecycle(stack, settings, progress, tick, live_version, options)
    elapsed = time.monotonic() - t_start
    top, leaf, scored = progress.accuracy()
    now_live = models.read_live(progress.r, settings.triton.model_name).version or live_version
    console.print(
        f"\n{len(progress.state)} listings classified; first one {first:.0f}s after the demo started, "
        f"{elapsed / 60:.1f} min in all; accuracy top level {top:.1%}, leaf {leaf:.1%} on {scored}; "
        f"live model {settings.triton.model_name} v{now_live}"
    )
    for line in progress.lifecycle:
        console.print(f"  {line}")
    some = next(iter(progress.state))
    console.print(
        "\nWhere to look:\n"
        f"  Redis ({settings.redis.url}):  HGETALL {keys.listing(some)}   SMEMBERS {keys.category('<id>')}"
        f"   SMEMBERS {keys.tag('<tag>')}   XREVRANGE {settings.redis.updates_stream} + - COUNT 5\n"
        f"  Kafka ({settings.kafka.bootstrap}): {settings.topics.classified}, {settings.topics.tag_updates}, "
        f"{settings.topics.review}, {settings.topics.dlq}, {settings.topics.shadow}\n"
        f"  Models: listings models   Review: listings review-ui   Shadow: listings shadow --report\n"
        f"  Worker metrics: http://127.0.0.1:{metrics_port}/metrics  (while a worker runs)\n"
        f"  Triton metrics: http://127.0.0.1:{stack.triton_metrics_port}/metrics\n"
        f"  Logs: {stack.log_dir}"
    )
    return 0


def full_args(options: DemoOptions) -> list[str]:
    """`listings train` arguments of the model the lifecycle brings in: the default one, or for a rehearsal a
    second quick model (another seed, so it differs from the first)."""
    return ["--quick", "--seed", str(REHEARSAL_SEED)] if options.rehearse else []


def run_lifecycle(
    stack: StackSettings, settings: Settings, progress: Progress, tick: Any, live: str, options: DemoOptions
) -> None:
    """The full model: export, shadow it on live traffic, promote it, re-classify the catalogue with it."""
    from devtools.stack import triton
    from stream import models
    from stream.backfill import BackfillOptions, backfill
    from stream.shadow import ShadowOptions, read_shadow, shadow, summarize
    from training import export, train

    seed = {"seed": REHEARSAL_SEED} if options.rehearse else {}  # the model `full_args` has the trainer train
    full = train.train_or_reuse(stack, train.options(train.default_data(stack.data_dir), options.rehearse, **seed))
    # record the version that served so far *before* the candidate appears: without a record workers follow the
    # newest version, and the shadow would compare the candidate with itself (a rollback also needs it)
    models.promote(settings, live)
    pending = pending_candidate(stack.model_repository, live, full.name)
    candidate = str(pending if pending is not None else export.export(full, stack.model_repository))
    triton.load_model(stack, settings.triton.model_name, with_background=True)
    how = "exported before its promotion was stopped, " if pending is not None else "exported "
    progress.lifecycle.append(f"{incoming(options)} {how}as v{candidate}; shadowing it on the live stream")
    result: dict[str, Any] = {}
    shadowing = threading.Thread(
        target=lambda: result.update(
            asyncio.run(shadow(settings, ShadowOptions(candidate, duration_s=SHADOW_SECONDS)))
        ),
        daemon=True,
    )
    shadowing.start()
    deadline = time.monotonic() + SHADOW_SECONDS
    while time.monotonic() < deadline:
        tick(f"shadowing v{candidate} against live v{live}")
        time.sleep(2)
    shadowing.join(30)  # it stops on its own at SHADOW_SECONDS
    summary = summarize(read_shadow(settings), candidate)
    progress.lifecycle.append(
        f"shadow v{candidate}: {summary['compared']} compared, agreement {summary['agreement']}, "
        f"review flips {summary['review_flips']}"
    )
    models.promote(settings, candidate)
    progress.lifecycle.append(f"promoted v{candidate} (rollback: listings promote --rollback)")
    done = threading.Event()
    threading.Thread(
        target=lambda: (asyncio.run(backfill(settings, BackfillOptions(progress=False))), done.set()), daemon=True
    ).start()
    while not done.is_set():
        n = progress.by_version().get(candidate, 0)
        top, leaf, _ = progress.accuracy(candidate)
        so_far = f", its leaf accuracy {leaf:.1%}" if n else ""
        tick(f"re-classifying the catalogue with v{candidate}: {n}/{len(progress.rows)}{so_far}")
        time.sleep(1)
    tick(f"v{candidate} live")
    top, leaf, scored = progress.accuracy(candidate)
    progress.lifecycle.append(f"re-classified with v{candidate}: top level {top:.1%}, leaf {leaf:.1%} on {scored}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=3000, help="held-out listings to stream (default 3000)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="produce rate in events/s (default: as fast as possible)"
    )
    parser.add_argument("--quick", action="store_true", help="quick model only: no full training, no lifecycle")
    parser.add_argument(
        "--rehearse", action="store_true", help="play the lifecycle with a second quick model (a few minutes)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from devtools import config
    from devtools.stack.process import StackError

    try:
        return demo(config.load(), settings, DemoOptions(args.events, args.rate, args.quick, args.rehearse))
    except StackError as exc:
        print(f"demo failed: {exc}")
        return 1
