"""Running test code in a fresh interpreter: for settings the library reads once at load
(environment variables), and for code that must not take the test process down."""

import os
import subprocess
import sys


def run_script(script, timeout=300, **env):
    """Runs `script` in a fresh interpreter (with `env` added to the environment) and checks
    it finished and printed 'ok'."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=timeout, env=dict(os.environ, **env))
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
