"""The README's Python example runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_and_counts_nfe(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README lost its Python example"
    exec(compile(blocks[0], str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2
    assert "DDPMSampler" in printed[0] and "NFE 500 torch.Size([4, 3, 16, 16])" in printed[0]
    assert "DDIMSampler" in printed[1] and "NFE 25 torch.Size([4, 3, 16, 16])" in printed[1]
