"""Bookkeeping of checks: Stats (counts, worst ratios, failures per family / op / method /
direction), Attempt (one check) and Case (what one seed's checks share)."""
import contextlib
import traceback
from collections import Counter
from typing import Callable, Dict, List, Tuple

from .tolerance import Mismatch, error_ratio


def replay_command(seed: int) -> str:
    return f"python tests/fuzzing/differential.py --seed {seed}"


class Stats:
    """Checks run, worst error ratio and failures, keyed by (family, op, method, direction)."""

    def __init__(self):
        self.checks: Counter = Counter()
        self.worst: Dict[tuple, Tuple[float, int]] = {}
        self.failures: List[Tuple[int, tuple, str]] = []
        self.cases: Counter = Counter()
        self.notes: Counter = Counter()  # things skipped or noticed, not failures
        self.slowest: List[Tuple[float, int]] = []  # (seconds, seed), the five slowest cases

    def record(self, seed: int, key: tuple, ratio: float) -> None:
        self.checks[key] += 1
        if ratio >= self.worst.get(key, (-1.0, 0))[0]:
            self.worst[key] = (ratio, seed)

    def fail(self, seed: int, key: tuple, message: str) -> None:
        self.checks[key] += 1
        self.failures.append((seed, key, message))


class Attempt:
    """One check: runs in a `with`, collects ratios through `compare`, and records the
    outcome; an exception inside (a Mismatch or anything the library raised) is a failure."""

    def __init__(self, key: tuple):
        self.key, self.ratio, self.failed = key, 0.0, False

    def compare(self, what, got, ref, magnitude, terms, dtype) -> None:
        self.ratio = max(self.ratio, error_ratio(what, got, ref, magnitude, terms, dtype))

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise Mismatch(message)


class Case:
    """What one seed's checks share: the seed, its family, the Stats and the verbosity."""

    def __init__(self, seed: int, family: str, stats: Stats, verbose: bool = False):
        self.seed, self.family, self.stats, self.verbose = seed, family, stats, verbose

    @contextlib.contextmanager
    def attempt(self, op: str, method: str, direction: str):
        attempt = Attempt((self.family, op, method, direction))
        try:
            yield attempt
        except Exception as error:  # noqa: BLE001 - every failure is recorded, none escapes
            attempt.failed = True
            message = str(error) if isinstance(error, Mismatch) else (
                f"raised {type(error).__name__}: {error}\n"
                + "".join(traceback.format_exception(error)[-4:]))
            self.stats.fail(self.seed, attempt.key, message.strip()[:3000])
            if self.verbose:
                print(f"  FAIL {attempt.key}: {message}")
        else:
            self.stats.record(self.seed, attempt.key, attempt.ratio)
            if self.verbose:
                print(f"  ok   {attempt.key}: {attempt.ratio:.3g} of tolerance")

    def expect_error(self, op: str, method: str, call: Callable) -> None:
        """The reference rejects these arguments: the library must raise too (not crash)."""
        with self.attempt(op, method, "error") as a:
            try:
                call()
            except (RuntimeError, ValueError, TypeError, IndexError):
                return
            a.expect(False, "accepted arguments the reference rejects")

    def note(self, what: str) -> None:
        self.stats.notes[(self.family, what)] += 1
