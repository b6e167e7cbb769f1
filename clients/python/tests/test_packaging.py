"""python -m build makes an sdist and a wheel; the wheel installs into a clean
virtual environment, imports there and talks to the node."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from conftest import Node

HERE = Path(__file__).resolve().parents[1]


def test_wheel_installs_into_a_clean_venv(node: Node, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    r = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(HERE)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheels = list(dist.glob("weft_client-*.whl"))
    sdists = list(dist.glob("weft_client-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheels[0])], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    script = (
        "import weft, sys, pathlib\n"
        "assert pathlib.Path(weft.__file__).resolve().is_relative_to(pathlib.Path(sys.prefix).resolve()), weft.__file__\n"
        "assert (pathlib.Path(weft.__file__).parent / 'py.typed').exists()\n"
        f"with weft.Client({node.tcp!r}) as c:\n"
        "    print(c.ping()['pong'], c.echo('from the wheel'))\n"
    )
    r = subprocess.run([str(py), "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True from the wheel"
