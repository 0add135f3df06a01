"""What a bad-input case is: a small program with an expectation, the outcomes a run of it can
have, and the rule an exception's message must satisfy (it names the offending argument)."""
import re
from dataclasses import dataclass

FINE = ("RAISED", "CORRECT", "MEASURED")
FAILURES = ("CRASH", "HANG", "WRONG", "NO_RAISE", "REJECTED_VALID", "UNCLEAR",
            "NONFINITE_RULE", "SETUP_ERROR")

# What a message may say to name an argument (regular expressions, case-insensitive). The
# packed filter's three tensors are also "the packed weight"; x's CSR arrays are "x's row
# pointers / column index"; torch's own CSR checks say crow_indices / col_indices.
ALIASES = {
    "input": [r"\binput"],
    "weight": [r"\bweight\b"],
    "weight_size": [r"weight_size", r"kernel size"],
    "kernel": [r"\bkernel"],
    "k": [r"\bk\b"],
    "bias": [r"\bbias\b"],
    "row_ptr": [r"row_ptr", r"packed weight"],
    "col_idx": [r"col_idx", r"packed weight"],
    "values": [r"\bvalues\b", r"packed weight"],
    "crow": [r"crow", r"row pointer"],
    "col": [r"\bcol\b", r"col_ind", r"column ind"],
    "x": [r"(?<!\d )\bx\b(?! ?\d)"],  # x, x's; not the x of "3 x 3"
    "image_shape": [r"image_shape", r"H\*W"],
    "x_shape": [r"x_shape"],
    "mode": [r"\bmode\b"],
    "method": [r"\bmethod\b"],
    "groups": [r"\bgroups\b"],
    "stride": [r"\bstride"],
    "padding": [r"\bpadding\b", r"\bpadded\b"],
    "dilation": [r"\bdilation\b"],
    "t_crow": [r"t_crow", r"T's row pointers"],
    "t_col": [r"t_col", r"T's columns"],
    "t_values": [r"t_values"],
    "out_crow": [r"out_crow", r"output pattern", r"output(?:'s)? row pointers"],
    "out_col": [r"out_col", r"output pattern", r"output(?:'s)? column ind"],
    "grad_output": [r"grad_output"],
    "grad_out_values": [r"grad_out_values"],
    "indptr": [r"indptr", r"row pointer", r"index pointer"],
    "indices": [r"\bindices\b", r"column ind"],
    "data": [r"\bdata\b"],
    "memory": [r"alloc", r"memory"],
    "inplace": [r"modified by an inplace operation"],  # autograd's version-counter check
    "dtype": [r"dtype", r"data type"],
}

# torch's own boilerplate, which names no argument but may contain words that look like one
# ("... the FakeTensor and/or meta kernel does not call ...")
BOILERPLATE = [r"You're trying to run this operator with meta Tensors.*"]


def message_names(message: str, names) -> bool:
    """Whether an exception's message names one of `names` (through ALIASES)."""
    for phrase in BOILERPLATE:
        message = re.sub(phrase, "", message, flags=re.DOTALL)
    patterns = [p for name in names for p in ALIASES.get(name, [rf"\b{re.escape(name)}\b"])]
    return any(re.search(p, message, re.IGNORECASE) for p in patterns)


@dataclass
class Case:
    seed: int
    category: str
    kind: str
    setup: str
    run: str
    expect: str  # 'raise' | 'correct' | 'either' | 'measure'
    names: tuple = ()  # arguments an exception must name
    check: str = ""  # after `run` returned: AssertionError = wrong answer
    after: str = ""  # after the expected exception: the object must still work

    def label(self) -> dict:
        """The fields that identify the case in a result."""
        return {"seed": self.seed, "category": self.category, "kind": self.kind,
                "expect": self.expect}

    def program(self) -> str:
        expectation = {
            "raise": f"must raise an exception naming one of {list(self.names)}",
            "correct": "must return the correct result",
            "either": f"must return the correct result or raise naming one of {list(self.names)}",
            "measure": "non-finite numbers: compared with the documented rules",
        }[self.expect]
        parts = [f"# seed {self.seed}: {self.category} / {self.kind}", self.setup,
                 f"# --- the call under test: {expectation}", self.run]
        if self.check:
            parts += ["# --- if it returned: the check", self.check]
        if self.after:
            parts += ["# --- if it raised: the object must still work", self.after]
        return "\n".join(parts) + "\n"
