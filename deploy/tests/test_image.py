"""The Dockerfile, read with dockerfile-parse and linted with hadolint: a builder that caches the
dependencies apart from the code, a runtime stage with no compiler and no root, the host run by
its entrypoint and probed by its health check, and every file the manifests name in place. The
Dockerfile names no service: its builder's steps, run with a stand-in cargo (image_build.py),
must build and copy every service of deploy/manifests.

Run from the repository root: target/tools/venv/bin/python -m unittest discover -s deploy/tests -v
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
import unittest
from pathlib import Path

import image_build
import stack
from stack import ROOT

HOST = "/app/host"
# Images with a compiler or a package manager's worth of tools: never what runs.
BUILD_IMAGES = re.compile(r"(^|/)(rust|golang|gcc|buildpack-deps|clang|node|python)(:|$)")


def hadolint():
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def exec_form(value):
    """The JSON array of an exec-form instruction; None for the shell form."""
    try:
        words = json.loads(value or "")
    except json.JSONDecodeError:
        return None
    return words if isinstance(words, list) else None


class DockerfileTest(unittest.TestCase):
    def setUp(self):
        self.image = stack.image()

    def test_hadolint_finds_nothing(self):
        binary = hadolint()
        self.assertIsNotNone(binary, "hadolint is not installed: run ensure_python_tools from scripts/ensure.sh")
        done = subprocess.run([binary, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_it_is_multi_stage_and_builds_on_the_workspaces_rust(self):
        self.assertGreaterEqual(len(self.image.stages), 2)
        with open(ROOT / "Cargo.toml", "rb") as file:
            rust = tomllib.load(file)["workspace"]["package"]["rust-version"]
        first = self.image.base(self.image.stages[0])
        self.assertRegex(first, rf"^rust:{re.escape(rust)}(\.\d+)?-bookworm$")

    def test_the_final_stage_has_no_compiler_and_runs_no_commands(self):
        base = self.image.base(self.image.final)
        self.assertNotIn(base, self.image.stage_names(), "the final stage starts from a build stage")
        self.assertIsNone(BUILD_IMAGES.search(base), base)
        self.assertIsNone(self.image.last("RUN"), "a RUN in the final stage needs a shell")

    def test_the_dependencies_are_cooked_before_the_code_is_copied(self):
        build = next((stage for stage in self.image.stages if any(
            i["instruction"] == "RUN" and "cargo build" in i["value"] for i in stage)), None)
        self.assertIsNotNone(build, "no stage runs `cargo build`")
        steps = [(i["instruction"], i["value"]) for i in build]
        cook = next((n for n, (kind, value) in enumerate(steps) if kind == "RUN" and "cargo chef cook" in value), None)
        self.assertIsNotNone(cook, "no `cargo chef cook` in the stage that builds")
        code = [n for n, (kind, value) in enumerate(steps) if kind == "COPY" and re.search(r"\b(host|components)\b", value)]
        self.assertTrue(code, "the build stage copies no code")
        self.assertLess(cook, min(code))
        cooked = steps[cook][1]
        for expected in ("--release -p host", "--profile component --target wasm32-wasip2"):
            self.assertIn(expected, cooked)

    def test_it_builds_the_release_host_and_every_services_component(self):
        built = " ".join(i["value"] for stage in self.image.stages for i in stage if i["instruction"] == "RUN")
        self.assertRegex(built, r"cargo build [^&]*--release[^&]*-p host")
        calls = image_build.stage_run("builder").cargo_calls()
        services = sorted(stack.manifest_components())
        components = [c for c in calls if c[:1] == ["build"] and "wasm32-wasip2" in c]
        self.assertEqual([sorted(image_build.packages(c)) for c in components], [services])
        self.assertIn("--locked", components[0])
        self.assertEqual(components[0][components[0].index("--profile") + 1], "component")
        cooked = [c for c in calls if c[:2] == ["chef", "cook"] and "wasm32-wasip2" in c]
        self.assertEqual([sorted(image_build.packages(c)) for c in cooked], [services],
                         "the dependencies of every component are cooked")

    def test_the_dockerfile_names_no_service(self):
        text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        for name in stack.manifest_components():
            with self.subTest(service=name):
                self.assertIsNone(re.search(rf"\b{re.escape(name)}\b", code), "deploy/manifests is the list")

    def test_it_runs_as_a_user_other_than_root(self):
        user = self.image.last("USER")
        self.assertIsNotNone(user, "no USER: the image would run as root")
        self.assertNotIn(user.split(":")[0], ("root", "0", ""))

    def test_the_health_check_is_host_probe_in_exec_form(self):
        check = self.image.last("HEALTHCHECK")
        self.assertIsNotNone(check)
        found = re.search(r"(?:^|\s)CMD\s+(.*)$", check, re.DOTALL)
        command = found.group(1).strip() if found else ""
        self.assertTrue(command.startswith("["), "exec form: the final image has no shell")
        self.assertEqual(exec_form(command), [HOST, "probe"])

    def test_the_entrypoint_is_the_host_and_no_manifest_is_chosen(self):
        self.assertEqual(exec_form(self.image.last("ENTRYPOINT")), [HOST])
        self.assertIsNone(self.image.last("CMD"))
        env = " ".join(i["value"] for i in self.image.final if i["instruction"] == "ENV")
        self.assertNotIn("HOST_CONFIG", env, "which component runs is the container's configuration")

    def test_the_image_holds_the_host_the_components_the_migrations_and_the_manifests(self):
        builder = self.image.stage_names()
        host = self.image.source_of(HOST)
        self.assertIsNotNone(host)
        self.assertIn(host[0], builder)
        self.assertTrue(host[1].endswith("/target/release/host"), host[1])
        for name, component in stack.manifest_components().items():
            with self.subTest(component=name):
                self.assertTrue(component["wasm"].startswith("/app/components/"), component["wasm"])
                wasm = self.image.source_of(component["wasm"])
                self.assertIsNotNone(wasm)
                self.assertIn(wasm[0], builder)
                built = image_build.image_file(component["wasm"])
                self.assertTrue(built.is_file(), f"the builder leaves nothing at {wasm[1]}")
                self.assertEqual(image_build.built_package(built), name, "not the component cargo built")
                self.assertEqual(component["migrations"], f"/app/migrations/{name}")
                migrations = image_build.image_file(f"/app/migrations/{name}")
                self.assertTrue(image_build.same_tree(migrations, ROOT / "components" / name / "migrations"),
                                f"the image's /app/migrations/{name} is not components/{name}/migrations")
                manifest = self.image.repo_file(f"/app/manifests/{name}.toml")
                self.assertEqual(manifest, ROOT / "deploy" / "manifests" / f"{name}.toml")
                self.assertTrue(manifest.is_file())

    def test_the_build_context_leaves_out_build_output_and_history(self):
        ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
        self.assertLessEqual({"target", ".git", ".dev"}, ignored)


if __name__ == "__main__":
    unittest.main()
