"""The front server's side of ``--ray``: one queue, many Ray workers.

``RayDispatcher`` stands where the local ``PromptWorker`` stands in ``server.create_app``
(same methods: start, stop, wake, interrupt, request_free, current, health,
ensure_running). The SQLite queue and history stay on the front server. Its thread takes
the next prompt in queue order (``QueueStore.claim_next``: priority, then arrival) whenever
a worker is idle, and gives it to the idle worker ``ray_routing.choose`` picks; each
running prompt has a thread here that reads the worker's stream.

Each worker is a ``RayLane`` (``latentgraph_server.ray_lane``): a ``PromptWorker`` whose
``_execute`` runs the prompt on its actor instead of in-process. Everything else is the
local worker's own code, so events reach websocket clients in the same order (terminal
events held back until the history is written, then ``executing`` null), previews follow
the same policy and history writes are retried the same way.

Faults: a worker whose actor dies (its process killed, its machine lost) is noticed by the
stream it was sending, or by a ping (every worker is pinged every 2 s; one that leaves a
ping unanswered for ``ray_ping_timeout`` is killed), and dropped; its prompt goes back to
the queue at its old place and runs again on another worker, and the files the lost run had
already shipped are removed, so one prompt leaves one set of outputs. After
``ray_max_tries`` lost runs the prompt is recorded as failed with the reason. Workers are
kept at the wanted number (``ray_routing.wanted_workers``, from the cluster's resources, read
every 2 s): a replacement waits for room in the cluster, so a machine that joins is used as
soon as Ray places a worker on it, and without a fixed ``ray_workers`` a machine that joins
with GPUs (or CPUs, up to ``ray_max_workers``) gets workers of its own.

Interrupts: ``interrupt(prompt_id)`` reaches only the worker running that prompt; without an
id (ComfyUI's global interrupt) every running prompt is interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import ray

from graph import Engine
from graph.executor import error_event, failed_status
from latentgraph_server.config import ServerConfig
from latentgraph_server.queue_store import QueueItem, QueueStore
from latentgraph_server.ray_files import Announced, history_outputs
from latentgraph_server.ray_lane import RayLane, WorkerLost
from latentgraph_server.ray_routing import choose, gpus_per_worker, model_candidates, wanted_workers
from latentgraph_server.ray_workers import remote_runner
from latentgraph_server.worker import RunningPrompt, SendJson, SendPreview

log = logging.getLogger("latentgraph.ray")

PING_SECONDS = 2.0
HOUSEKEEPING_SECONDS = 0.5
PLACEMENTS_KEPT = 10_000


class RayDispatcher:
    """Runs queued prompts on Ray workers, one prompt per worker at a time."""

    def __init__(self, config: ServerConfig, store: QueueStore, engine: Engine, send: SendJson,
                 send_preview: SendPreview, on_queue_changed: Callable[[], None],
                 routing: str | None = None, seed: int | None = None) -> None:
        self.config = config
        self.store = store
        self.engine = engine  # the front server's: its folders; its held plans are dropped (workers prepare)
        self._send = send
        self._send_preview = send_preview
        self.on_queue_changed = on_queue_changed
        self.routing = routing or config.ray_routing
        self._rng = random.Random(seed)
        self._lanes: list[RayLane] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="latentgraph-ray-dispatcher", daemon=True)
        self._owns_ray = False
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._signals: dict[int, Any] = {}  # the main thread's handlers before Ray connected
        self._next_name = 0
        self._start_failures = 0  # workers that failed to start in a row (backs off new starts)
        self._next_start = 0.0
        self.tries: dict[str, int] = {}
        self.announced = Announced()  # what lost runs already sent their clients (ray_lane)
        self._resources: dict[str, float] = {}  # the cluster's, as last read
        self._resources_read = -math.inf
        # prompt id -> the workers it was given to, in order (also what the tests check routing by)
        self.placements: OrderedDict[str, list[str]] = OrderedDict()
        self.restarts = 0
        self.lost_workers = 0
        self.hung_workers = 0  # of those, killed for not answering pings
        self.last_failure: str | None = None

    # -- the PromptWorker interface ------------------------------------------------------------

    def start(self) -> None:
        """Connects to Ray and starts the dispatcher thread (called on the server's event loop,
        before it listens). Ray is connected to from the main thread when this is it: a local
        instance started from another thread leaves two of its processes behind at shutdown."""
        try:
            self._event_loop = asyncio.get_running_loop()
        except RuntimeError:
            self._event_loop = None
        if threading.current_thread() is threading.main_thread():
            self._signals = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
            try:
                self._connect()
            except Exception as exc:  # the dispatcher thread tries again
                self.last_failure = f"cannot connect to Ray at {self.config.ray_address}: {exc}"
                log.error("%s", self.last_failure)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        for lane in self.lanes():
            lane.stop(0)  # interrupts its prompt
        if self._thread.is_alive():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while any(lane.state == "busy" for lane in self.lanes()) and time.monotonic() < deadline:
            time.sleep(0.05)  # interrupted prompts finish (and are recorded) before their workers go
        for lane in self.lanes():
            _kill(lane.actor)
        if self._owns_ray:
            ray.shutdown()
            log.info("stopped the Ray workers and disconnected from Ray")

    def ensure_running(self) -> bool:
        """The watchdog: restarts the dispatcher thread if it died; True when it had to."""
        if self._stopping.is_set() or self._thread.is_alive() or self._thread.ident is None:
            return False
        self.restarts += 1
        self.last_failure = "the dispatcher thread died"
        log.error("%s; starting a new one (restart %d)", self.last_failure, self.restarts)
        self._thread = threading.Thread(target=self._loop, name="latentgraph-ray-dispatcher", daemon=True)
        self._thread.start()
        return True

    def current(self) -> RunningPrompt | None:
        for lane in self.lanes():
            running = lane.current()
            if running is not None:
                return running
        return None

    def running_prompts(self) -> list[RunningPrompt]:
        return [running for running in (lane.current() for lane in self.lanes()) if running is not None]

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupts ``prompt_id`` on the worker running it; without an id, every running prompt."""
        hit = False
        for lane in self.lanes():
            hit = lane.interrupt(prompt_id) or hit
        return hit

    def request_free(self, *, unload_models: bool, free_memory: bool) -> None:
        for lane in self.lanes():
            lane.request_free(unload_models=unload_models, free_memory=free_memory)

    def health(self) -> dict[str, Any]:
        """What /system_stats shows: the dispatcher and every worker (never waits on Ray)."""
        running = [lane.current() for lane in self.lanes()]
        return {"alive": self._thread.is_alive(), "restarts": self.restarts, "last_failure": self.last_failure,
                "running": next((r.prompt_id for r in running if r is not None), None),
                "mode": "ray", "ray_address": self.config.ray_address, "routing": self.routing,
                "lost_workers": self.lost_workers, "hung_workers": self.hung_workers, "workers": [lane.describe() for lane in self.lanes()]}

    def lanes(self) -> list[RayLane]:
        with self._lock:
            return list(self._lanes)

    # -- the thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._connect()
                break
            except Exception as exc:
                self.last_failure = f"cannot connect to Ray at {self.config.ray_address}: {exc}"
                log.error("%s; retrying", self.last_failure)
                self._stopping.wait(5.0)
        last_housekeeping = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if time.monotonic() - last_housekeeping >= HOUSEKEEPING_SECONDS:
                    last_housekeeping = time.monotonic()
                    self._housekeeping()
                self._dispatch()
            except Exception:
                log.exception("the Ray dispatcher failed; going on")
                self._stopping.wait(1.0)
            self._wake.wait(HOUSEKEEPING_SECONDS)

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        address = self.config.ray_address
        # "auto": Ray's own default (RAY_ADDRESS, else the cluster last started on this machine with
        # `ray start`, else a new local one); "local" (Ray's own word too): always a new local one.
        ray.init(address=None if address == "auto" else address, include_dashboard=False)
        self._owns_ray = True
        if threading.current_thread() is threading.main_thread():
            restore_signals(self._signals)
        elif self._event_loop is not None:
            self._event_loop.call_soon_threadsafe(restore_signals, self._signals)
        log.info("connected to Ray: %s", ray.cluster_resources())

    def _cluster(self) -> dict[str, float]:
        """The cluster's total resources, read again every PING_SECONDS (machines join and leave)."""
        if time.monotonic() - self._resources_read >= PING_SECONDS:
            self._resources = dict(ray.cluster_resources())
            self._resources_read = time.monotonic()
        return self._resources

    def _wanted(self) -> int:
        return wanted_workers(self._cluster(), self.config.ray_workers, self.config.ray_worker_cpus,
                              self._gpus_each(), self.config.ray_max_workers)

    def _gpus_each(self) -> float:
        return gpus_per_worker(self._cluster(), self.config.cpu, self.config.ray_worker_gpus)

    def _housekeeping(self) -> None:
        """Workers: drop the dead, add up to the wanted number, mark the ready, ping the others."""
        now = time.monotonic()
        wanted = self._wanted()
        with self._lock:
            self._lanes = [lane for lane in self._lanes if lane.state != "dead"]
            missing = wanted - len(self._lanes)
            # More workers than the cluster now has room for (a machine left): those still
            # waiting for room are withdrawn, newest first; placed ones stay until they are lost.
            surplus = [lane for lane in reversed(self._lanes) if lane.state == "starting"][:max(-missing, 0)]
            for lane in surplus:
                lane.state = "dead"
        for lane in surplus:
            _kill(lane.actor)
            log.info("withdrew Ray worker %s: the cluster has room for %d workers", lane.name, wanted)
        if now >= self._next_start:
            for _ in range(max(missing, 0)):
                self._add_lane()
        for lane in self.lanes():
            if lane.state == "starting":  # no time limit: it may be waiting for room in the cluster
                if ray.wait([lane.ready_ref], timeout=0)[0]:
                    self._settle(lane, lane.ready_ref, fresh=True)
                continue
            if lane.state not in ("idle", "busy"):
                continue
            if lane.ping_ref is not None:
                if ray.wait([lane.ping_ref], timeout=0)[0]:
                    ref, lane.ping_ref = lane.ping_ref, None
                    if lane.state == "idle":  # a busy worker's death is reported by its prompt's stream
                        # only an answer sent since the worker's last prompt describes it as it is now
                        self._settle(lane, ref, fresh=lane.ping_sent >= lane.idle_since)
                elif now - lane.ping_sent > self.config.ray_ping_timeout:
                    self._unresponsive(lane, now - lane.ping_sent)
                    continue
            if lane.ping_ref is None and now - lane.ping_sent >= PING_SECONDS:
                lane.ping_ref, lane.ping_sent = lane.actor.ping.remote(), now

    def _unresponsive(self, lane: RayLane, waited: float) -> None:
        """A worker that has not answered a ping for --ray-ping-timeout (hung, or its machine
        unreachable) is killed; a prompt it was running goes the way of a lost worker's."""
        self.hung_workers += 1
        self.last_failure = f"worker {lane.name} did not answer for {waited:.0f} s; killed"
        log.error("%s", self.last_failure)
        with self._lock:
            idle = lane.state == "idle"
            if idle:
                lane.state = "dead"
        if idle:
            self.lost_workers += 1
        lane.ping_ref = None
        _kill(lane.actor)  # a running prompt's stream now fails: _run_on re-queues it

    def _add_lane(self) -> None:
        name = f"w{self._next_name}"
        self._next_name += 1
        actor = remote_runner(self.config.ray_worker_cpus, self._gpus_each()).remote(self.config, name)
        lane = RayLane(name, actor, self.store, self.engine, self._send, self._send_preview,
                       self._lane_done, self.config.preview_method, self.announced)
        with self._lock:
            self._lanes.append(lane)
        log.info("started Ray worker %s", name)

    def _settle(self, lane: RayLane, ref: Any, fresh: bool) -> None:
        """Reads a worker's info answer: ready (or still alive), else dead. ``fresh``: the
        answer may replace what is known of the worker (its models)."""
        try:
            info = ray.get(ref)
        except Exception as exc:
            starting = lane.state == "starting"
            with self._lock:
                lane.state = "dead"
            self.lost_workers += 1
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            self.last_failure = f"worker {lane.name} was lost {'starting' if starting else 'while idle'}: {reason}"
            log.error("%s", self.last_failure)
            if starting:  # a worker that cannot start (bad models path, ...) is not retried in a tight loop
                self._start_failures += 1
                self._next_start = time.monotonic() + min(2.0 ** self._start_failures, 60.0)
            return
        self._start_failures = 0
        with self._lock:
            if fresh:
                lane.info = info
            if lane.state == "starting":
                lane.state = "idle"
                lane.idle_since = time.monotonic()
                log.info("Ray worker %s ready on %s (%s)", lane.name, info.get("host"), info.get("device"))

    def _lane_done(self) -> None:
        self.on_queue_changed()

    def _dispatch(self) -> None:
        """Gives queued prompts, in queue order, to idle workers."""
        while not self._stopping.is_set():
            with self._lock:
                idle = [lane for lane in self._lanes if lane.state == "idle"]
            if not idle:
                return
            item = self.store.claim_next()
            if item is None:
                return
            by_name = {lane.name: lane for lane in idle}
            chosen = by_name[choose([lane.candidate() for lane in idle], set(model_candidates(item.prompt)),
                                    self.routing, self._rng).name]
            with self._lock:
                chosen.state = "busy"
            self.placements.setdefault(item.prompt_id, []).append(chosen.name)
            while len(self.placements) > PLACEMENTS_KEPT:
                self.placements.popitem(last=False)
            threading.Thread(target=self._run_on, args=(chosen, item), daemon=True,
                             name=f"latentgraph-ray-{chosen.name}").start()

    def _run_on(self, lane: RayLane, item: QueueItem) -> None:
        try:
            lane._run(item)
            self.tries.pop(item.prompt_id, None)
            with self._lock:
                if lane.state == "busy":
                    lane.state = "idle"
                    lane.idle_since = time.monotonic()
        except WorkerLost as lost:
            self._lost(lane, item, lost)
        except BaseException:  # the dispatcher outlives anything a run does
            log.exception("prompt %s failed outside the engine on worker %s", item.prompt_id, lane.name)
            with self._lock:
                lane.state = "idle"
        finally:
            self._wake.set()

    def _lost(self, lane: RayLane, item: QueueItem, lost: WorkerLost) -> None:
        with self._lock:
            lane.state = "dead"
        _kill(lane.actor)
        self.lost_workers += 1
        # Every lost run counts, started or not: a prompt that kills each worker it reaches
        # before its first event must still end.
        tries = self.tries.get(item.prompt_id, 0) + 1
        self.tries[item.prompt_id] = tries
        self.last_failure = f"worker {lane.name} was lost running prompt {item.prompt_id}: {lost.reason}"
        if tries < self.config.ray_max_tries:
            log.error("%s; the prompt goes back to the queue (lost runs: %d)", self.last_failure, tries)
            self.store.requeue(item.prompt_id)
            self.on_queue_changed()
            return
        log.error("%s; failing it after %d lost runs", self.last_failure, tries)
        self.tries.pop(item.prompt_id, None)
        message = f"its worker was lost {tries} times (--ray-max-tries); last: {lost.reason}"
        error = error_event(item.prompt_id, message, "WorkerLost")
        outputs, meta = history_outputs(self.announced.pop(item.prompt_id))  # files its client was given
        lane._record(item.prompt_id, outputs, failed_status("execution_error", error), meta)
        self._send(item.client_id, "execution_error", error)
        self._send(item.client_id, "executing", {"node": None, "display_node": None, "prompt_id": item.prompt_id})
        self.on_queue_changed()


def restore_signals(handlers: dict[int, Any]) -> None:
    """Gives SIGTERM and SIGINT back to the handlers they had before Ray connected (asyncio's,
    set by aiohttp). Connecting installs Ray's own, which end the process at once: the server
    would skip its shutdown and leave the Ray instance it started behind. Python sets handlers
    only on the main thread, where the server's event loop runs."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number, handler in handlers.items():
        if handler is not None:
            signal.signal(number, handler)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass  # already gone
