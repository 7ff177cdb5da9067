"""The research notebook in examples/ runs from top to bottom (nbclient) and shows what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parent.parent / "examples" / "research.ipynb"


@pytest.mark.slow
def test_research_notebook_runs(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "Traceback" not in outputs and "Error" not in outputs
    assert "alliances," in outputs and "censored" in outputs
    # survival at age 40 rises with the horizon (printed per horizon: level, S(40), median)
    rows = [ln.split() for ln in outputs.splitlines()]
    surv = {int(r[0]): float(r[1]) for r in rows if len(r) == 3 and r[0] in ("5", "20", "80")}
    assert list(surv) == [5, 20, 80] and surv[5] < surv[20] <= surv[80]
    # the PRIM box restricts the abundance share (low trust lives at low shares)
    assert "'mindset.abundance_share'" in outputs.splitlines()[-1]
