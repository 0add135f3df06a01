"""The differential fuzzer's cases (tests/fuzzing/differential.py is the command line).

One module per job:

  tolerance.py           the comparison rule: allowed_error, error_ratio, Mismatch
  checks.py              Stats, Attempt (one check) and Case (one seed's checks)
  library.py             the library under test (OPS), its optional peer package, devices
  draws.py               random draws both families share
  filter_cases.py        sparse filter: configuration and inputs a seed draws
  filter_reference.py    sparse filter: float64 F.conv2d references, terms, comparisons
  filter_entries.py      sparse filter: a case; the functional API and the operator
  filter_modules.py      sparse filter: SparseConv2d (from_dense and its constructor)
  toeplitz_cases.py      Toeplitz: configuration, sparse images and kernel a seed draws
  toeplitz_reference.py  Toeplitz: naive scatter + scipy references, CSR comparisons
  toeplitz_entries.py    Toeplitz: a case; every torch entry point
  compat_checks.py       scipy conventions and compat drop-ins (and the package they replace)
  driver.py              seeds to cases, the loop over them, the hang watchdog
  report.py              the summary table
"""
