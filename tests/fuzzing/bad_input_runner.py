"""The parent side of the bad-input fuzzer: runs requests on worker subprocesses
(bad_input_worker.py), applies a per-case timeout (HANG), notices a worker that died (CRASH,
with its signal and the tail of its stderr), starts a fresh worker and goes on."""
import json
import os
import select
import signal
import subprocess
import sys
import time

from bad_input_cases import case_of

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER_SCRIPT = os.path.join(HERE, "bad_input_worker.py")


class Worker:
    """A worker subprocess: cases go in on stdin, results come back on a pipe, stdout and
    stderr go to a log file (faulthandler's traceback of a crash lands there)."""

    def __init__(self, log_path: str, memory_gb: float, startup_timeout: float):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [sys.executable, WORKER_SCRIPT, "--worker-fd", str(write_fd),
             "--memory-gb", str(memory_gb)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, pass_fds=(write_fd,),
            env=env, cwd=REPO)
        os.close(write_fd)
        self.fd = read_fd
        self.buffer = b""
        self.request = None
        self.deadline = None
        self.log_offset = 0
        hello = self.read_line(time.time() + startup_timeout)
        if not hello:
            self.close()
            raise RuntimeError(f"worker did not start; log {log_path}:\n{self.log_tail()}")
        self.info = json.loads(hello)

    def read_line(self, deadline: float):
        """One line, '' at end of file, None at the deadline."""
        while b"\n" not in self.buffer:
            remaining = deadline - time.time()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return ""
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def has_line(self) -> bool:
        return b"\n" in self.buffer

    def send(self, request: dict, timeout: float) -> None:
        self.log.flush()
        self.log_offset = os.path.getsize(self.log_path)
        self.request = request
        self.deadline = time.time() + timeout
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()

    def log_tail(self, limit: int = 2500) -> str:
        """What the worker wrote since the case began: faulthandler's report without its
        list of extension modules, or the last `limit` characters."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        if "Fatal Python error" in text:
            text = text[text.index("Fatal Python error"):]
            text = text.split("\n\nExtension modules:")[0]
        return text[-limit:]

    def death(self) -> str:
        """How the process ended (after end of file on its pipe)."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                return f"signal {signal.Signals(-code).name}"
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        os.close(self.fd)
        self.log.close()


def run_requests(requests, workers=1, timeout=30.0, memory_gb=4.0, startup_timeout=240.0,
                 log_dir=None, progress=None):
    """Runs every request ({'seed': S} or {'case': Case fields}) on `workers` worker
    subprocesses; returns (results in request order, worker info)."""
    import tempfile

    log_dir = log_dir or tempfile.mkdtemp(prefix="bad_input_logs_")
    pending = list(enumerate(requests))[::-1]
    results = [None] * len(requests)
    pool, started = [], 0
    info = {}

    def start_worker():
        nonlocal started
        started += 1
        worker = Worker(os.path.join(log_dir, f"worker{started}.log"), memory_gb,
                        startup_timeout)
        info.update(worker.info, log_dir=log_dir, workers_started=started)
        return worker

    def record(worker, result):
        results[worker.index] = result
        if progress:
            progress(result)

    try:
        pool = [start_worker() for _ in range(max(1, min(workers, len(requests))))]
        while pending or any(w.request for w in pool):
            for worker in pool:
                if worker.request is None and pending:
                    index, request = pending.pop()
                    worker.index = index
                    worker.send(request, timeout)
            busy = [w for w in pool if w.request is not None]
            ready = [w for w in busy if w.has_line()]
            if not ready:
                wait = max(0.0, min(w.deadline for w in busy) - time.time())
                readable = select.select([w.fd for w in busy], [], [], wait)[0]
                ready = [w for w in busy if w.fd in readable]
            for worker in busy:
                if worker in ready:
                    line = worker.read_line(time.time() + 1.0)
                    if line is None:
                        continue  # a partial line: wait for the rest
                    if line:
                        record(worker, json.loads(line))
                        worker.request = None
                        continue
                    outcome = dict(case_of(worker.request).label(), outcome="CRASH",
                                   detail=f"worker died ({worker.death()}); stderr tail:\n"
                                          f"{worker.log_tail()}")
                elif time.time() >= worker.deadline:
                    outcome = dict(case_of(worker.request).label(), outcome="HANG",
                                   detail=f"no answer within {timeout:.0f} s")
                else:
                    continue
                record(worker, outcome)
                worker.close()  # a dead or stuck worker: replaced by a fresh one
                pool[pool.index(worker)] = start_worker()
    finally:
        for worker in pool:
            worker.close()
    return results, info
