"""hatchling build hook: compile the decoders' hot loops (spicectl/spice/codecs/_accel.c).

A wheel gets the extension module and a platform tag; an editable install gets it next to the source.
Without a working C compiler (or with SPICECTL_NO_ACCEL=1) the build still succeeds, pure Python:
spicectl then decodes with its reference decoders, which are slower (`host check` says which ran).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("spicectl/spice/codecs/_accel.c")


def compile_accel(root: Path, out_dir: Path) -> Path | None:
    """Build the extension into out_dir; None (with the reason on stderr) when it cannot be built."""
    if os.environ.get("SPICECTL_NO_ACCEL") == "1":
        print("spicectl: SPICECTL_NO_ACCEL=1, building without the compiled decoders", file=sys.stderr)
        return None
    target = out_dir / ("_accel" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    command = [*cc, "-shared", "-fPIC", "-O2", "-std=gnu11", "-Wall", "-Werror=implicit-function-declaration",
               f"-I{sysconfig.get_paths()['include']}", str(root / SOURCE), "-o", str(target)]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:
        print(f"spicectl: no C compiler ({e.strerror}: {cc[0]}); the decoders stay pure Python", file=sys.stderr)
        return None
    if done.returncode:
        print(f"spicectl: compiling {SOURCE} failed; the decoders stay pure Python:\n{done.stderr}", file=sys.stderr)
        return None
    return target


class AccelHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        if version == "editable":
            compile_accel(root, root / SOURCE.parent)  # imported from the checkout
            return
        out_dir = Path(tempfile.mkdtemp(prefix="spicectl-accel-"))
        built = compile_accel(root, out_dir)
        if built is not None:
            build_data["force_include"][str(built)] = str(SOURCE.parent / built.name)
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
