"""The DeepSparse side of the benchmark: a worker process that runs in the DeepSparse venv
(scripts/setup_deepsparse.sh: deepsparse 1.8.0, numpy 1.26, onnx 1.14; no torch) and is
driven by bench/deepsparse_peer.py over stdin/stdout, one JSON object a line each way.

It is started by file path (``.venv-deepsparse/bin/python .../deepsparse_worker.py``), never
imported as part of torch_sparse_conv, so it needs only the standard library, numpy, onnx and
deepsparse. Before anything else it raises glibc's mmap and trim thresholds (the same
``mallopt`` calls as bench/machine.py's ``pin_heap``), so its timings are free of the
fresh-page faults that bench's are; the parent also passes the same settings as
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``. Anything DeepSparse prints goes to
stderr: the worker keeps the real stdout for its replies.

Requests (``id`` names a compiled model):

    {"cmd": "load", "dir": D, "batch": N, "threads": T, "input": "x.npy"}
        build D/model.onnx from D/graph.json (bench/onnx_spec.py), compile it with
        deepsparse.compile_model(batch_size=N, num_cores=T), load the input
        -> {"ok": true, "id": K, "compile_seconds": s, "onnx": path}
    {"cmd": "run", "id": K, "output": path}      one call, the output saved with numpy.save
    {"cmd": "warmup", "id": K, "calls": n}
    {"cmd": "sample", "id": K, "min_seconds": f, "max_repeat": 64, "settle": s}
        one timing sample (a call repeated, doubling, until it lasts min_seconds), then a
        pause of ``settle`` seconds so DeepSparse's threads go idle before the parent's next
        contender runs -> {"ok": true, "seconds": per call, "faults": minor faults per call}
    {"cmd": "free", "id": K}
    {"cmd": "quit"}

Every reply has ``ok``; a failed request answers ``{"ok": false, "error": "..."}`` and the
worker goes on.
"""
import ctypes
import ctypes.util
import json
import os
import resource
import sys
import time
import traceback

MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2 ** 31 - 1
COMMANDS = ("load", "run", "warmup", "sample", "free")


def pin_heap() -> dict:
    """glibc's mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD), as the bench does."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        applied = libc.mallopt(-3, MMAP_THRESHOLD) == 1 and libc.mallopt(-1, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError) as error:
        return dict(how="mallopt", applied=False, why=str(error))
    return dict(how="mallopt", applied=applied, M_MMAP_THRESHOLD=MMAP_THRESHOLD,
                M_TRIM_THRESHOLD=TRIM_THRESHOLD,
                env={k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_",
                                                    "MALLOC_TRIM_THRESHOLD_")})


def build_onnx(directory: str) -> str:
    """directory/graph.json and its .npy weights -> directory/model.onnx (checked by onnx)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    with open(os.path.join(directory, "graph.json")) as f:
        spec = json.load(f)
    nodes = [helper.make_node(n["op"], n["inputs"], [n["output"]], **n["attrs"])
             for n in spec["nodes"]]
    initializers = [numpy_helper.from_array(np.load(os.path.join(directory, path)), name)
                    for name, path in spec["initializers"].items()]
    graph = helper.make_graph(
        nodes, "torch_sparse_conv_bench",
        [helper.make_tensor_value_info(i["name"], TensorProto.FLOAT, i["shape"])
         for i in spec["inputs"]],
        [helper.make_tensor_value_info(o["name"], TensorProto.FLOAT, o["shape"])
         for o in spec["outputs"]],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec["opset"])],
                              producer_name="torch_sparse_conv.bench")
    model.ir_version = 8  # what onnx 1.14's checker and deepsparse 1.8 both accept
    onnx.checker.check_model(model)
    path = os.path.join(directory, "model.onnx")
    onnx.save(model, path)
    return path


class Worker:
    def __init__(self):
        self.models = {}
        self.next_id = 0

    def load(self, request: dict) -> dict:
        import numpy as np
        import deepsparse
        path = build_onnx(request["dir"])
        start = time.perf_counter()
        engine = deepsparse.compile_model(path, batch_size=int(request["batch"]),
                                          num_cores=int(request["threads"]))
        seconds = time.perf_counter() - start
        x = np.ascontiguousarray(np.load(os.path.join(request["dir"], request["input"])))
        self.next_id += 1
        self.models[self.next_id] = (engine, [x])
        return dict(id=self.next_id, compile_seconds=seconds, onnx=path)

    def run(self, request: dict) -> dict:
        import numpy as np
        engine, inputs = self.models[request["id"]]
        np.save(request["output"], engine.run(inputs)[0])
        return {}

    def warmup(self, request: dict) -> dict:
        engine, inputs = self.models[request["id"]]
        for _ in range(int(request["calls"])):
            engine.run(inputs)
        return {}

    def sample(self, request: dict) -> dict:
        engine, inputs = self.models[request["id"]]
        repeat = 1
        while True:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(repeat):
                engine.run(inputs)
            seconds = time.perf_counter() - start
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            if seconds >= float(request["min_seconds"]) or repeat >= int(request["max_repeat"]):
                break
            repeat *= 2
        time.sleep(float(request.get("settle", 0.0)))
        return dict(seconds=seconds / repeat, faults=faults / repeat)

    def free(self, request: dict) -> dict:
        self.models.pop(request["id"], None)
        return {}


def main() -> None:
    heap = pin_heap()
    # Replies go to a private copy of stdout; fd 1 itself now points at stderr, so banners
    # and warnings from DeepSparse or numpy cannot corrupt the protocol.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

    def reply(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    try:
        import numpy
        import onnx
        import deepsparse
    except Exception as error:  # noqa: BLE001 - any import failure is the answer
        reply(dict(ok=False, error=f"{type(error).__name__}: {error}"))
        return
    reply(dict(ok=True, ready=True, deepsparse=deepsparse.__version__, numpy=numpy.__version__,
               onnx=onnx.__version__, python=sys.version.split()[0], heap=heap))
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request["cmd"] == "quit":
                reply(dict(ok=True))
                break
            if request["cmd"] not in COMMANDS:
                raise ValueError(f"unknown command {request['cmd']!r}")
            answer = getattr(worker, request["cmd"])(request)
            reply(dict(ok=True, **answer))
        except Exception as error:  # noqa: BLE001 - reported to the parent, worker goes on
            detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            reply(dict(ok=False, error=f"{type(error).__name__}: {error}"[:500],
                       where=detail[:300]))


if __name__ == "__main__":
    main()
