"""Run a notebook through nbclient and read its outputs (shared by the notebook, app and
evaluation tests)."""
from __future__ import annotations

import os
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, env: dict[str, str], timeout: int = 900):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs_text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", ""))
            data = out.get("data", {})
            chunks.append(data.get("text/plain", ""))
            if out.get("output_type") == "error":
                chunks.append("ERROR " + out.get("ename", ""))
    return "\n".join(chunks)
