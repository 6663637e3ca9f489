"""A build stage of the Dockerfile run for real, without Docker or a compiler, for the tests beside
this file: the Dockerfile names no service (its RUN steps read deploy/manifests), so what the
image holds is known only by running those steps.

`stage_run(name)` runs the stage's instructions in a scratch folder standing in for the
container's root: WORKDIR and SHELL as the stage (and the stages it starts from) set them, COPY
from the build context as Docker copies (a folder's contents into the destination), COPY --from
another stage as an empty file (what another stage makes is not what these tests read), and each
RUN with its shell, absolute paths moved under the scratch root, and `cargo` a stand-in that
records its arguments, refuses a package the workspace has not, and for `cargo build` writes each
package's output where Cargo would (`target/<target>/<profile>/<crate>.wasm`, `target/release/
host`), naming the package inside. Each stage runs once per test process.

`image_file(container_path)` is then the file the image holds at a path of its final stage, on
this machine; `built_package(file)` the package the stand-in built it for.
"""

import atexit
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import stack
from stack import ROOT

# What the stand-in `cargo` writes into each file it "builds".
BUILT_MARK = "built by the stand-in cargo for package "

STAND_IN_CARGO = f"""#!{sys.executable}
import json, os, sys, tomllib
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["CARGO_CALLS"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
packages = [args[n + 1] for n, arg in enumerate(args) if arg == "-p"]
members = {{}}
workspace = Path("Cargo.toml")
if workspace.is_file():
    for member in tomllib.loads(workspace.read_text())["workspace"]["members"]:
        manifest = Path(member) / "Cargo.toml"
        if manifest.is_file():
            members[tomllib.loads(manifest.read_text())["package"]["name"]] = member
if args[:1] != ["build"]:
    sys.exit(0)
for package in packages:
    if package not in members:
        sys.exit(f"error: package ID specification `{{package}}` did not match any packages")
target = args[args.index("--target") + 1] if "--target" in args else None
profile = "release" if "--release" in args else args[args.index("--profile") + 1]
folder = Path("target", *([target] if target else []), profile)
folder.mkdir(parents=True, exist_ok=True)
for package in packages:
    file = package.replace("-", "_") + (".wasm" if target == "wasm32-wasip2" else "")
    (folder / file).write_text("{BUILT_MARK}" + package + "\\n")
"""

_ABSOLUTE = re.compile(r"(?<=[\s\"'])/(?=[A-Za-z])")


class StageRun:
    """A stage's instructions, run under `root` (the container's `/`)."""

    def __init__(self, image, name):
        self.image = image
        self.scratch = Path(tempfile.mkdtemp(prefix=f"stage-{name}-"))
        atexit.register(shutil.rmtree, self.scratch, ignore_errors=True)
        self.root = self.scratch / "root"
        self.root.mkdir()
        self.calls_file = self.scratch / "cargo-calls"
        self.calls_file.touch()
        tools = self.scratch / "bin"
        tools.mkdir()
        (tools / "cargo").write_text(STAND_IN_CARGO, encoding="utf-8")
        (tools / "cargo").chmod(0o755)
        self.env = {"PATH": f"{tools}:/usr/bin:/bin", "HOME": str(self.scratch), "CARGO_CALLS": str(self.calls_file)}
        self.workdir, self.shell = "/", ["/bin/sh", "-c"]
        chain = self._chain(name)
        for stage in chain[:-1]:
            self._settings(stage)
        for instruction in chain[-1][1:]:
            self._run(instruction)

    def _chain(self, name):
        """The stages from the first one this stage starts from to the stage itself."""
        by_name = dict(zip(self.image.stage_names(), [s for s in self.image.stages if " AS " in s[0]["value"].upper()]))
        assert name in by_name, f"the Dockerfile has no stage {name}"
        chain = [by_name[name]]
        while self.image.base(chain[0]) in by_name:
            chain.insert(0, by_name[self.image.base(chain[0])])
        return chain

    def _settings(self, stage):
        for instruction in stage[1:]:
            if instruction["instruction"] in ("WORKDIR", "SHELL"):
                self._run(instruction)

    def path(self, container_path):
        """Where a path of the container is under the scratch root."""
        return self.root / os.path.normpath(os.path.join(self.workdir, container_path)).lstrip("/")

    def _run(self, instruction):
        kind, value = instruction["instruction"], instruction["value"]
        if kind == "WORKDIR":
            self.workdir = os.path.normpath(os.path.join(self.workdir, value))
            self.path(".").mkdir(parents=True, exist_ok=True)
        elif kind == "SHELL":
            self.shell = json.loads(value)
        elif kind in ("COPY", "ADD"):
            self._copy(value)
        elif kind == "RUN":
            command = _ABSOLUTE.sub(str(self.root) + "/", value)
            done = subprocess.run([*self.shell, command], cwd=self.path("."), env=self.env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"RUN {value}\nfailed ({done.returncode}):\n{done.stdout}{done.stderr}"

    def _copy(self, value):
        words = shlex.split(value)
        flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
        paths = [w for w in words if not w.startswith("--")]
        sources, destination = paths[:-1], paths[-1]
        as_folder = destination.endswith("/") or len(sources) > 1
        target = self.path(destination)
        for source in sources:
            into = target / Path(source).name if as_folder else target
            if "from" in flags:
                into.parent.mkdir(parents=True, exist_ok=True)
                into.touch()
            elif (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "target"))
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, into)

    def cargo_calls(self):
        """The argument lists `cargo` was called with, in order."""
        return [json.loads(line) for line in self.calls_file.read_text(encoding="utf-8").splitlines()]


@cache
def stage_run(name):
    return StageRun(stack.image(), name)


def image_file(container_path):
    """The file or folder the image holds at `container_path`, on this machine, or None."""
    found = stack.image().source_of(container_path)
    if found is None:
        return None
    stage, source = found
    return ROOT / source if stage is None else stage_run(stage).path(source)


def built_package(file):
    """The package the stand-in cargo built `file` for, or None."""
    text = Path(file).read_text(encoding="utf-8", errors="replace")
    return text[len(BUILT_MARK):].strip() if text.startswith(BUILT_MARK) else None


def same_tree(one, other):
    """Whether two folders hold the same files with the same contents."""
    def files(folder):
        folder = Path(folder)
        return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return Path(one).is_dir() and Path(other).is_dir() and files(one) == files(other)


def packages(call):
    """The `-p` packages of one cargo call."""
    return [call[n + 1] for n, arg in enumerate(call) if arg == "-p"]

