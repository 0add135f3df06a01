"""DeepSparse (Neural Magic's sparse CPU inference engine) as a peer of the sparse-filter
suites, run in a worker process of its own venv and timed in turn with our contenders.

DeepSparse 1.8 needs numpy < 2 and onnx < 1.15, so it cannot live in .venv beside torch
2.11; scripts/setup_deepsparse.sh makes ``.venv-deepsparse`` for it. :class:`DeepSparsePeer`
starts bench/deepsparse_worker.py with that venv's python and speaks JSON lines to it. For a
cell the model (one pruned layer, or the pruned ResNet-50) is written out by
bench/onnx_spec.py, zeros kept in the weights, the worker builds the ONNX graph, compiles it
for the batch and the run's threads, and :class:`DeepSparseContender` is then a contender of
bench/timing.py: its output is checked against the reference like ours, and in every round
of ``time_interleaved_stats`` it takes its turn, the worker timing its own sample (a round
of ours in this process, then one of DeepSparse in the worker, while the other process
waits). Before each DeepSparse sample this process sleeps :data:`SETTLE_SECONDS`, so its
idle OpenMP threads stop spinning; the worker is stopped (SIGSTOP) whenever it has answered
and continued (SIGCONT) only to take a request, since DeepSparse's own threads kept spinning
after a sample: with the worker merely idle, our contenders ran up to 1.4x slower on 512x7x7
(3.34 -> 4.59 ms) and dense up to 1.8x.

Where the venv or deepsparse is missing, or the worker fails, :func:`start` returns no peer
and a note, and the suites go on without it (the note lands in the report).
"""
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from . import machine, onnx_spec
from .timing import RemoteTimed

NAME = "deepsparse"
VENV_VARIABLE = "DEEPSPARSE_VENV"   # scripts/setup_deepsparse.sh reads the same variable
VENV_NAME = ".venv-deepsparse"
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepsparse_worker.py")
SETTLE_SECONDS = 0.005
START_TIMEOUT = 120.0    # seconds for the worker to import deepsparse
LOAD_TIMEOUT = 900.0     # compiling the pruned ResNet-50 takes the longest
CALL_TIMEOUT = 300.0


class WorkerError(RuntimeError):
    """The worker answered with an error, died or did not answer in time."""


def venv_python() -> Tuple[Optional[str], str]:
    """The DeepSparse venv's python and where it was looked for: ``$DEEPSPARSE_VENV``, else
    ``.venv-deepsparse`` beside the torch_sparse_conv package's source tree, else in the
    current directory."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = ([os.environ[VENV_VARIABLE]] if os.environ.get(VENV_VARIABLE) else
                  [os.path.join(package_root, VENV_NAME), os.path.abspath(VENV_NAME)])
    for venv in dict.fromkeys(candidates):
        python = os.path.join(venv, "bin", "python")
        if os.access(python, os.X_OK):
            return python, venv
    return None, " or ".join(dict.fromkeys(candidates))


class DeepSparsePeer:
    """A running worker: :meth:`contender` compiles a model there; :meth:`close` ends it."""

    def __init__(self, process: subprocess.Popen, info: Dict, root: str, stderr_path: str,
                 threads: int, python: str = ""):
        self.process, self.info, self.root, self.python = process, info, root, python
        self.stderr_path, self.threads = stderr_path, threads
        self._count = 0

    # ------------------------------------------------------------------ protocol
    def _stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-3:])[-400:]
        except OSError:
            return ""

    def request(self, timeout: float = CALL_TIMEOUT, **message) -> Dict:
        """Sends one request and returns the reply; raises :class:`WorkerError` on an error
        reply, a dead worker or no reply within ``timeout`` seconds (the worker is then
        ended)."""
        if self.process.poll() is not None:
            raise WorkerError(f"the DeepSparse worker has exited ({self.process.returncode}): "
                              f"{self._stderr_tail()}")
        self._signal(signal.SIGCONT)
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            return _read_reply(self.process, timeout, self._stderr_tail)
        finally:
            if message.get("cmd") != "quit":
                self._signal(signal.SIGSTOP)  # no thread of it runs while we are timed

    def _signal(self, number: int) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, number)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------------ models
    def contender(self, model: torch.nn.Module, example: torch.Tensor,
                  label: str = "model") -> "DeepSparseContender":
        """``model`` (eval mode, float32) written out, rebuilt as ONNX and compiled by the
        worker for ``example``'s batch; raises onnx_spec.Unsupported or WorkerError."""
        self._count += 1
        directory = os.path.join(self.root, f"{self._count:03d}-{label}")
        onnx_spec.write(model, example.detach().cpu(), directory)
        np.save(os.path.join(directory, "x.npy"),
                example.detach().to(torch.float32).cpu().contiguous().numpy())
        reply = self.request(timeout=LOAD_TIMEOUT, cmd="load", dir=directory,
                             batch=int(example.shape[0]), threads=self.threads, input="x.npy")
        return DeepSparseContender(self, reply["id"], directory, reply["compile_seconds"])

    def close(self) -> None:
        """Ends the worker and removes its files."""
        self._signal(signal.SIGCONT)
        if self.process.poll() is None:
            try:
                self.request(timeout=10.0, cmd="quit")
            except WorkerError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DeepSparseContender(RemoteTimed):
    """One compiled model in the worker, as a contender of bench/timing.py."""

    def __init__(self, peer: DeepSparsePeer, model_id: int, directory: str,
                 compile_seconds: float):
        self.peer, self.model_id, self.directory = peer, model_id, directory
        self.compile_seconds = compile_seconds

    def __call__(self) -> torch.Tensor:
        path = os.path.join(self.directory, "out.npy")
        self.peer.request(cmd="run", id=self.model_id, output=path)
        return torch.from_numpy(np.load(path))

    def warmup(self, calls: int) -> None:
        self.peer.request(cmd="warmup", id=self.model_id, calls=calls)

    def sample(self, min_seconds: float, max_repeat: int) -> Tuple[float, float]:
        time.sleep(SETTLE_SECONDS)  # this process's OpenMP threads stop spinning
        reply = self.peer.request(cmd="sample", id=self.model_id, min_seconds=min_seconds,
                                  max_repeat=max_repeat, settle=SETTLE_SECONDS)
        return reply["seconds"], reply["faults"]

    def free(self) -> None:
        """Drops the compiled model in the worker and its files here."""
        try:
            self.peer.request(cmd="free", id=self.model_id)
        except WorkerError:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)


def _read_reply(process: subprocess.Popen, timeout: float, stderr_tail) -> Dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(left, 0.0))
        if not ready:
            process.kill()
            process.wait()
            raise WorkerError(f"the DeepSparse worker did not answer in {timeout:g} s; ended")
        line = process.stdout.readline()
        if not line:
            process.wait()
            raise WorkerError(f"the DeepSparse worker exited ({process.returncode}): "
                              f"{stderr_tail()}")
        if line.strip():
            break
    reply = json.loads(line)
    if not reply.get("ok"):
        raise WorkerError(f"DeepSparse worker: {reply.get('error')}")
    return reply


def start(threads: int) -> Tuple[Optional[DeepSparsePeer], str]:
    """A running worker for ``threads`` cores and a one-line note on it (versions), or None
    and why not (no venv, deepsparse not importable there, the worker failed)."""
    python, where = venv_python()
    if python is None:
        return None, (f"DeepSparse left out: no venv at {where} (bash "
                      "scripts/setup_deepsparse.sh makes it)")
    root = tempfile.mkdtemp(prefix="tsc-deepsparse-")
    stderr_path = os.path.join(root, "worker-stderr.txt")
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1", **machine.HEAP_ENV)
    env.pop("PYTHONPATH", None)  # nothing of .venv's site-packages in the worker
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([python, WORKER], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                                   cwd=root)
    peer = DeepSparsePeer(process, {}, root, stderr_path, threads, python)
    try:
        peer.info = _read_reply(process, START_TIMEOUT, peer._stderr_tail)
    except (WorkerError, ValueError) as error:
        peer.close()
        return None, f"DeepSparse left out: {error} (python {python})"
    note = (f"DeepSparse {peer.info.get('deepsparse')} (numpy {peer.info.get('numpy')}, onnx "
            f"{peer.info.get('onnx')}, Python {peer.info.get('python')}) in a worker process "
            f"from {where}, {threads} cores")
    return peer, note


def describe_for_json(peer: Optional[DeepSparsePeer], note: str) -> Dict:
    """What a result JSON records about the peer."""
    record = dict(available=peer is not None, note=note)
    if peer is not None:
        record.update({k: v for k, v in peer.info.items() if k not in ("ok", "ready")},
                      worker_python=peer.python)
    return record
