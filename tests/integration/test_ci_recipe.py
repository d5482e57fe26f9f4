"""The README's CI recipe, run exactly as written: a desktop guest booted, a needle waited for, text typed
into a terminal and read back by OCR, a screenshot, and a video of it all."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.integration.conftest import SPICECTL

pytestmark = pytest.mark.integration


def recipe() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- ci-recipe:start -->\n```sh\n(.*?)```\n<!-- ci-recipe:end -->", text, re.S)
    assert block, "the README has no CI recipe between its markers"
    return block.group(1)


def test_the_readmes_ci_recipe_runs_as_written(spicectl, desktop_image, tmp_path):
    import av

    script = tmp_path / "ci-desktop.sh"
    script.write_text(recipe())
    out = tmp_path / "artifacts"
    bin_dir = str(__import__("pathlib").Path(SPICECTL[0]).parent)
    env = {**spicectl.env, "GUEST": "ci-recipe", "OUT": str(out), "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    env.pop("SPICECTL_PERSIST", None)   # as a CI job has it: the holder on, as the script asks
    run = subprocess.run(["sh", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    final = np.asarray(Image.open(out / "final.png").convert("RGB"))
    assert final.shape == (768, 1024, 3)
    with av.open(str(out / "run.webm")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(frames) >= 10 and frames[-1].shape == final.shape
    assert not any(out.glob("*last-frame.png")), "a wait timed out"
    names = [r["name"] for r in spicectl("vm", "list", "--json").json()]
    assert "ci-recipe" not in names   # the script's trap deleted its guest
