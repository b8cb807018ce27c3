"""The client library stays light: a torch-free front end imports it."""

from __future__ import annotations

import subprocess
import sys


def test_the_client_imports_no_torch_and_no_service_code() -> None:
    probe = (
        "import sys, genserve.client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'redis', 'typer', 'rich'})); "
        "print(sorted(m for m in sys.modules if m.startswith('genserve.') "
        "and not m.startswith(('genserve.client', 'genserve.v1'))))"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.splitlines() == ["[]", "[]"]
