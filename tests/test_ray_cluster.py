"""``vidinv batch --ray HOST:PORT`` on a real two-node Ray cluster started with ``ray start``.

The head (1 CPU) and a second node (1 CPU and its own ``worker_node`` resource) run as separate
``ray start --block`` processes, each in its own process group, with a token of their own and a
temporary folder of their own (nothing of another Ray on the machine is touched: the cleanup
kills these two process groups by id, never ``ray stop``). ``vidinv batch edit`` runs four
clips through the cluster with two workers, so one of them must run on the second node; when
that worker has a video half-written, the whole second node is killed (SIGKILL to its process
group: raylet, its workers, everything). Every video must still finish exactly once — whole,
decodable, with its record — and no partial file may remain. Also: an address where nothing
listens is one line within seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media import real_clip_path
from tests.model_fixtures import make_tiny_model
from vidinv.batch.files import decoded_frame_count, sidecar_path

pytest.importorskip("ray")

RAY = Path(sys.executable).with_name("ray")
REPO = Path(__file__).resolve().parents[1]
FRAMES = 80
CLIPS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return found


def _node_processes(leader: int) -> list[int]:
    """A node's processes: the ``ray start`` process group ``leader`` and every descendant
    (Ray starts some workers in sessions of their own)."""
    table = _processes()
    members = {pid for pid, (_, group) in table.items() if group == leader}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in members} - members
        members |= more
        grew = bool(more)
    return sorted(members)


def _kill_node(process: subprocess.Popen) -> None:
    """SIGKILL to every process of the node (its group first, then strays)."""
    pids = _node_processes(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _open_partials(pids: list[int], folder: Path) -> list[Path]:
    """The hidden ``.partial`` files under ``folder`` that one of ``pids`` has open."""
    found = []
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        found += [Path(link) for link in links
                  if link.startswith(str(folder)) and ".partial" in link]
    return found


def _kill_group(process: subprocess.Popen) -> None:
    _kill_node(process)
    process.wait(timeout=30)


@pytest.fixture
def cluster() -> Iterator[dict]:
    """A head and a second node on this machine; yields the address, the environment a
    driver needs (the cluster's token) and the second node's process."""
    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # short: Ray's socket paths
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               PYTHONPATH=str(REPO),  # the workers import this checkout's vidinv
               # notice a lost node within seconds (defaults: tens of seconds)
               RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
               RAY_health_check_failure_threshold="3")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=80000000",
              "--disable-usage-stats", "--block"]
    started: list[subprocess.Popen] = []
    logs = temp / "logs.txt"
    try:
        with open(logs, "w") as log:
            head = subprocess.Popen(
                [str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false",
                 f"--temp-dir={temp / 'ray'}", *common],
                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
            started.append(head)
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert head.poll() is None and time.monotonic() < deadline, \
                        logs.read_text()[-2000:]
                    time.sleep(0.2)
            node = subprocess.Popen(
                [str(RAY), "start", f"--address=127.0.0.1:{port}",
                 '--resources={"worker_node": 1}', *common],
                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
            started.append(node)
        address = f"127.0.0.1:{port}"
        waited = subprocess.run(
            [sys.executable, "-c", "import ray, sys, time\n"
             f"ray.init(address={address!r}, log_to_driver=False)\n"
             "deadline = time.monotonic() + 90\n"
             "while ray.cluster_resources().get('worker_node', 0) < 1:\n"
             "    assert time.monotonic() < deadline, ray.cluster_resources()\n"
             "    time.sleep(0.5)\n"
             "print(len(ray.nodes()), ray.cluster_resources()['CPU'])\n"],
            env=env, capture_output=True, text=True, timeout=180)
        assert waited.returncode == 0, waited.stderr[-2000:] + logs.read_text()[-2000:]
        assert waited.stdout.split() == ["2", "2.0"]  # two nodes, one CPU each
        yield {"address": address, "env": env, "node": node, "logs": logs}
    finally:
        for process in reversed(started):
            _kill_group(process)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for n in range(CLIPS):
        path = folder / f"clip{n}.mp4"
        reader = VideoReader(real_clip_path())
        with VideoWriter(path, reader.info, crf=18, preset="ultrafast") as writer:
            for frame in reader:
                if frame.index >= n * 10 + FRAMES:
                    break
                if frame.index >= n * 10:
                    writer.write(frame)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_a_batch_survives_losing_a_node_mid_video(cluster, clips, tmp_path):
    model = make_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    # the workers of the killed node wrote here too: a shared folder at the same path, as on a
    # cluster with shared storage
    driver = subprocess.Popen(
        [sys.executable, "-m", "vidinv.cli", "batch", "edit", *map(str, clips), "-o", str(out),
         "--attr", "smile", "--model", str(model), "--quiet", "--ray", cluster["address"],
         "--workers", "2"],
        env=cluster["env"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node = cluster["node"]
    killed: list[Path] = []
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        members: list[int] = []
        listed = 0.0
        while driver.poll() is None and time.monotonic() < deadline:
            if time.monotonic() - listed > 0.5:  # the node's processes, twice a second
                members, listed = _node_processes(node.pid), time.monotonic()
                seen.update(members)
            writing = _open_partials(members, out)
            if writing:  # the second node's worker is in the middle of a video: lose the node
                killed = writing
                _kill_node(node)
                break
            time.sleep(0.02)
        stdout, stderr = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert killed, ("the second node never ran a video (the batch ended first)", stdout,
                    stderr, sorted(seen))
    assert driver.returncode == 0, stdout + stderr
    report = json.loads((out / "vidinv-batch.json").read_text())
    names = [record["name"] for record in report["videos"]]
    assert sorted(names) == sorted(f"clip{n}_smile" for n in range(CLIPS))  # each once
    assert all(record["status"] == "ok" for record in report["videos"]), report["videos"]
    victim = killed[0].name.split(".")[1]  # .clipN_smile.<hex>.partial.mp4
    assert victim in names
    for n in range(CLIPS):
        output = out / f"clip{n}_smile.mp4"
        assert decoded_frame_count(output) == FRAMES  # whole: every frame decodes
        assert json.loads(sidecar_path(output).read_text())["frames"] == FRAMES
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # the killed node's partial file is gone too
    assert not killed[0].exists()
    assert node.poll() is not None  # the node is really gone


def test_an_address_where_nothing_listens_is_one_line_within_seconds(tmp_path):
    from vidinv.batch.executor import probe_ray_address
    from vidinv.errors import VidinvError

    started = time.monotonic()
    with pytest.raises(VidinvError, match="cannot connect"):
        probe_ray_address("127.0.0.1:1")
    # something listens, but it is not a Ray cluster (it never answers)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with pytest.raises(VidinvError, match="no answer within 1 s"):
            probe_ray_address(f"127.0.0.1:{server.getsockname()[1]}", timeout=1)
    assert time.monotonic() - started < 5

    clip = tmp_path / "a.mp4"
    clip.write_bytes(real_clip_path().read_bytes())
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "vidinv.cli", "batch", "invert", str(clip), "-o",
         str(tmp_path / "o"), "--quiet", "--ray", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120,
        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
             "PYTHONPATH": str(REPO)})
    assert time.monotonic() - started < 60  # Python, torch and Ray start-up included
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "--ray 127.0.0.1:1: cannot connect" in lines[0] and "ray start --head" in lines[0]


_LOCAL_RAY_LISTENS = """
import json, os, subprocess, sys
sys.path.insert(0, {repo!r})
from tests.test_ray_cluster import _processes
from vidinv.batch.executor import RayExecutor
from vidinv.batch.worker import PipelineJob
executor = RayExecutor(PipelineJob(model=None, config=None), "local")
executor._init_ray()
ray = executor._ray
ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker process too
table = _processes()
mine = {{os.getpid()}}
while True:
    more = {{pid for pid, (parent, _) in table.items() if parent in mine}} - mine
    if not more:
        break
    mine |= more
listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
print(json.dumps([line.split()[3] for line in listening.splitlines()
                  if any(f"pid={{pid}}," in line for pid in mine)]))
executor.close()
"""


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_only(tmp_path):
    """``--ray`` without an address: every port the Ray it starts (GCS, raylet, workers)
    listens on is on 127.0.0.1, none on all interfaces."""
    if subprocess.run(["which", "ss"], capture_output=True).returncode != 0:
        pytest.skip("needs ss (iproute2)")
    done = subprocess.run(
        [sys.executable, "-c", _LOCAL_RAY_LISTENS.format(repo=str(REPO))],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"})
    assert done.returncode == 0, done.stderr[-2000:]
    addresses = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(addresses) >= 3, addresses  # GCS, raylet, a worker at least
    hosts = {address.rsplit(":", 1)[0] for address in addresses}
    assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, addresses
