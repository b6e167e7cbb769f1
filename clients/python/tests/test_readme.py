"""The README's query example runs as written (only the address changed to
the test's node) and prints what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Node

HERE = Path(__file__).resolve().parents[1]


def test_readme_query_example(node: Node) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (HERE / "README.md").read_text(), re.S)
    (code,) = [b for b in blocks if "table_create" in b]
    code = code.replace("tcp://127.0.0.1:7400", node.tcp)
    env = dict(os.environ, PYTHONPATH=str(HERE / "src"))
    for _ in range(2):  # twice: it also runs against a table that exists
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("{'kind': 'pump', 'rpm': 1200}") and lines[0].endswith(" True"), lines
        assert lines[1] == "True"
        assert lines[2].startswith("[") and "pump/1" not in lines[2], lines  # rpm is 0 now
        assert lines[3] == "True"
