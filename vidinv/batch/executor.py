"""Where tasks run: in this process one after another, or on a Ray actor pool.

**In-process** (:class:`InProcessExecutor`): one :class:`~vidinv.batch.worker.Worker`, the tasks
in order.

**Ray** (:class:`RayExecutor`): ``workers`` actors, each a :class:`~vidinv.batch.worker.Worker`
that loads the models once. Each actor asks for ``cpus_per_task`` CPUs and ``gpus_per_task``
GPUs (Ray then sets ``CUDA_VISIBLE_DEVICES`` and ``OMP_NUM_THREADS`` for it) and is declared with
``max_restarts=-1`` and ``max_task_retries``: when a worker process dies mid-video, Ray starts a
new one and runs the video again there; after ``1 + max_task_retries`` deaths on the same video
that video is reported failed and the batch goes on. Nothing here retries or reschedules by
itself; the loop below only hands the next video to the actor that has just finished one (as
:class:`ray.util.ActorPool` does, which cannot say which input a failed call belonged to), and
stops an actor once no video is left for it, so that its resources are free for an actor that
Ray restarts elsewhere when a node is lost (on a full cluster it would otherwise wait for
them for ever). When a node is lost, Ray's own retries of a call to an actor there fail at once
(the actor is *unavailable* until Ray notices the loss); such a video is handed to another
actor, and the unreachable one is given up (a new actor is started if none is left), up to
``1 + max_task_retries`` times per video.

The address: ``"local"`` starts a Ray on this machine sized to it (all its CPUs and GPUs),
listening on 127.0.0.1 only;
``"auto"`` joins the cluster this machine belongs to (``ray start`` ran here); ``ray://HOST:PORT``
connects to a cluster's head through Ray Client (a cluster's address is probed first: nothing
there is one line within seconds, not Ray's minutes of retries). When Ray is already
initialised in this process (a notebook, the tests) that session is used and left running.

On a cluster, every node needs vidinv and the model files, and OUTDIR must be shared storage
at the same path: the workers write the outputs.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

from vidinv.batch.files import Task
from vidinv.batch.worker import Job, Worker, base_record
from vidinv.errors import BackendUnavailableError, VidinvError

log = logging.getLogger(__name__)

RAY_EXTRA_HINT = "pip install 'vidinv[ray]'"


class RayUnavailableError(BackendUnavailableError):
    """``--ray`` was asked for but Ray is not installed."""


class WorkerLoadError(VidinvError):
    """The workers could not load the job's models (a user error, said once)."""


def import_ray():
    """The ``ray`` module, or a one-line error naming the extra."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(f"--ray needs Ray: {RAY_EXTRA_HINT}") from None
    return ray


def check_address(address: str) -> str:
    """``local``, ``auto``, ``ray://HOST:PORT`` or ``HOST:PORT``; anything else is an error
    (usually an input file that followed ``--ray`` and was taken for its address)."""
    if address in ("local", "auto") or address.startswith("ray://"):
        return address
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        return address
    raise VidinvError(f"--ray {address!r}: not a Ray address; use --ray (local), --ray auto or "
                      "--ray ray://HOST:PORT, and put the inputs before --ray")


#: Seconds to wait for a TCP connection to, and a gRPC answer from, a cluster's address.
PROBE_SECONDS = 3.0
#: The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray
#: Client server) answers with a SETTINGS frame (type 4) of its own.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def probe_ray_address(address: str, timeout: float = PROBE_SECONDS) -> None:
    """One line within ``timeout`` seconds (instead of Ray's minutes of retries) when nothing
    that speaks gRPC listens at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``)."""
    import socket

    target = address.removeprefix("ray://")
    host, _, port_text = target.rpartition(":")
    host = host.strip("[]")
    fix = ("start the cluster (ray start --head) or check the address; --ray without an "
           "address runs Ray on this machine")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise VidinvError(f"--ray {address}: not HOST:PORT; {fix}")
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_HTTP2_HELLO)
            answer = sock.recv(9)
    except TimeoutError:
        raise VidinvError(f"--ray {address}: no answer within {timeout:g} s; {fix}") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise VidinvError(f"--ray {address}: cannot connect ({reason}); {fix}") from None
    if len(answer) < 9 or answer[3] != 4:
        raise VidinvError(f"--ray {address}: something listens there, but not a Ray cluster "
                          f"(no gRPC answer); {fix}")


def _auto_address(ray: Any) -> str:
    """The address ``--ray auto`` means (RAY_ADDRESS, or the cluster ``ray start`` ran here)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        address = canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - Ray's own wording, one line
        address = None
    if not address:
        raise VidinvError("--ray auto: this machine belongs to no Ray cluster (no `ray start` "
                          "ran here, RAY_ADDRESS is not set); use --ray HOST:PORT or --ray")
    return str(address)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """A local Ray (``--ray`` without an address) on 127.0.0.1 only.

    Ray takes the node's address from the network unless clusters are off for the platform
    (its flag for Windows and macOS, read through ``ray._private.ray_constants``); with the
    node address 127.0.0.1 every Ray server of the session (GCS, raylet, object manager,
    workers) listens on the loopback interface, so no other machine can reach it. The flag (and
    its environment variable, for the processes Ray starts) is set for the ``ray.init`` call
    only."""
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: its defaults apply
        yield
        return
    import os

    variable = getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR",
                       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    before_env = os.environ.get(variable)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[variable] = "0"  # for the processes ray.init starts (they inherit it)
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = before_env


class InProcessExecutor:
    """The tasks one after another in this process."""

    name = "in-process"

    def __init__(self, job: Job, kit: Any = None) -> None:
        self.job = job
        self._kit = kit
        self._worker: Worker | None = None
        self.workers = 1

    @property
    def started(self) -> bool:
        return self._worker is not None

    def start(self, tasks: int | None = None) -> None:
        self._worker = Worker(self.job, self._kit)
        if self._worker.load_error:
            raise WorkerLoadError(self._worker.load_error)

    def run(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        if self._worker is None:
            self.start()
        for task in tasks:
            yield self._worker.run(task)

    def close(self) -> None:
        self._worker = None


class RayExecutor:
    """A pool of Ray actors running :class:`~vidinv.batch.worker.Worker` (see the module).

    Args:
        job: what the workers load and run.
        address: ``local``, ``auto`` or ``ray://HOST:PORT``.
        workers: actors to start (None: as many as the cluster's CPUs (or GPUs, with
            ``gpus_per_task``) allow, at most one per task).
        cpus_per_task / gpus_per_task: resources each actor holds.
        max_task_retries: times a video is run again after its worker process died.
    """

    def __init__(self, job: Job, address: str = "local", *, workers: int | None = None,
                 cpus_per_task: float = 1.0, gpus_per_task: float = 0.0,
                 max_task_retries: int = 2) -> None:
        self.job = job
        self.address = check_address(address)
        self.requested_workers = workers
        self.cpus_per_task = float(cpus_per_task)
        self.gpus_per_task = float(gpus_per_task)
        self.max_task_retries = int(max_task_retries)
        self.actors: list[Any] = []
        self._actor_class: Any = None
        self.workers = 0
        self._ray: Any = None
        self._started_ray = False

    @property
    def name(self) -> str:
        return f"ray ({self.address}, {self.workers} workers)"

    def _init_ray(self) -> None:
        ray = self._ray = import_ray()
        if ray.is_initialized():
            return
        if self.address == "local":
            with _loopback_only():
                ray.init(include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
        else:
            address = self.address
            if address == "auto":
                address = _auto_address(ray)
            probe_ray_address(address)
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        self._started_ray = True

    def capacity(self) -> int:
        """How many actors the cluster can hold at once with this executor's resources."""
        resources = self._ray.cluster_resources()
        slots = []
        if self.cpus_per_task > 0:
            slots.append(math.floor(resources.get("CPU", 0) / self.cpus_per_task + 1e-9))
        if self.gpus_per_task > 0:
            gpus = resources.get("GPU", 0)
            if gpus <= 0:
                raise VidinvError("--gpus-per-task: this Ray cluster has no GPU; leave it out "
                                  "or connect to a cluster with GPUs")
            slots.append(math.floor(gpus / self.gpus_per_task + 1e-9))
        return max(1, min(slots)) if slots else 1

    @property
    def started(self) -> bool:
        return bool(self.actors)

    def start(self, tasks: int | None = None) -> None:
        """Start Ray (if needed) and the actors; they load the models before this returns."""
        self._init_ray()
        ray = self._ray
        count = self.requested_workers or self.capacity()
        if tasks is not None:
            count = max(1, min(count, tasks))
        actor_class = ray.remote(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_restarts=-1,
            max_task_retries=self.max_task_retries, concurrency_groups={"status": 1})(Worker)
        self._actor_class = actor_class
        self.actors = [actor_class.remote(self.job) for _ in range(count)]
        self.workers = count
        for status in self.status():
            if status["load_error"]:
                self.close()
                raise WorkerLoadError(status["load_error"])

    def status(self) -> list[dict[str, Any]]:
        """Each live actor's ``{"pid", "task", "load_error"}``, answered while it runs a video
        (an actor that has just been stopped, or is being restarted, is left out)."""
        ray = self._ray
        refs = [actor.status.options(concurrency_group="status").remote()
                for actor in list(self.actors)]
        found = []
        for ref in refs:
            try:
                found.append(ray.get(ref))
            except ray.exceptions.RayActorError:
                continue
        return found

    def run(self, tasks: Sequence[Task]) -> Iterator[dict[str, Any]]:
        """Records in the order the videos finish."""
        ray = self._ray
        if not self.actors:
            self.start(len(tasks))
        pending = list(reversed(tasks))
        running: dict[Any, tuple[Task, Any]] = {}
        idle = list(self.actors)

        def submit() -> None:
            while idle and pending:
                actor, task = idle.pop(), pending.pop()
                running[actor.run.remote(task)] = (task, actor)

        def release_idle() -> None:
            # Nothing left to hand out: an idle actor only holds its CPUs (or GPUs), which an
            # actor being restarted after its node was lost may need to run its video again.
            while idle and not pending:
                actor = idle.pop()
                ray.kill(actor, no_restart=True)
                self.actors.remove(actor)

        unreachable = getattr(ray.exceptions, "ActorUnavailableError", ())
        handed_back: dict[str, int] = {}
        submit()
        release_idle()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            task, actor = running.pop(done[0])
            try:
                record = ray.get(done[0])
            except unreachable as error:
                # The actor cannot be reached (its node was lost; Ray has not restarted it
                # yet, and its own retries of this call failed at once): give the actor up and
                # hand the video to another one (a new one if none is left).
                tries = handed_back[task.name] = handed_back.get(task.name, 0) + 1
                self._give_up(actor)
                if tries > 1 + self.max_task_retries:
                    record = self._died(task, error)
                else:
                    log.warning("%s: its worker cannot be reached (node lost?); the video is "
                                "run again on another worker", task.name)
                    pending.append(task)
                    if not idle and not running:
                        idle.append(self._add_actor())
                    submit()
                    release_idle()
                    continue
            except ray.exceptions.RayError as error:  # died 1 + max_task_retries times
                record = self._died(task, error)
                idle.append(actor)
            else:
                idle.append(actor)
            submit()
            release_idle()
            yield record

    def _give_up(self, actor: Any) -> None:
        """Stop using ``actor`` (Ray may still restart it; it is killed so it does not hold
        resources for nothing)."""
        if actor in self.actors:
            self.actors.remove(actor)
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone with its node
            log.debug("actor already gone", exc_info=True)

    def _add_actor(self) -> Any:
        actor = self._actor_class.remote(self.job)
        self.actors.append(actor)
        return actor

    def _died(self, task: Task, error: BaseException) -> dict[str, Any]:
        record = base_record(task)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        record.update(status="failed",
                      error=f"the worker process died {1 + self.max_task_retries} times on "
                            f"this video ({type(error).__name__}: {first_line})")
        return record

    def close(self) -> None:
        """Stop the actors (and Ray, when this executor started it)."""
        if self._ray is None:
            return
        for actor in self.actors:
            self._ray.kill(actor, no_restart=True)
        self.actors = []
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False


def make_executor(job: Job, ray_address: str | None, *, workers: int | None = None,
                gpus_per_task: float = 0.0, cpus_per_task: float = 1.0, kit: Any = None):
    """:class:`InProcessExecutor` when ``ray_address`` is None, else :class:`RayExecutor`.

    ``kit``: models the caller has already loaded (in-process only; Ray workers load their
    own).
    """
    if ray_address is None:
        if gpus_per_task:
            raise VidinvError("--gpus-per-task is for --ray; in this process use --device cuda")
        return InProcessExecutor(job, kit)
    import_ray()
    return RayExecutor(job, ray_address, workers=workers, cpus_per_task=cpus_per_task,
                     gpus_per_task=gpus_per_task)
