"""./dev.sh: its command line, doctor on this machine, the services it derives from
deploy/manifests, its syntax and the bash 3.2 rules, and --watch against a fake host.

Run all of scripts/tests (standard library only, from the repository root):

    python3 -m unittest discover -s scripts/tests -v
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "dev.sh"
ENSURE = ROOT / "scripts" / "ensure.sh"


def dev(*args, env=None):
    return subprocess.run(
        [str(DEV), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


class CommandLineTest(unittest.TestCase):
    def test_help_in_each_spelling_exits_0_and_lists_every_mode_and_option(self):
        for spelling in ("--help", "-h", "help"):
            with self.subTest(spelling):
                run = dev(spelling)
                self.assertEqual(run.returncode, 0, run.stderr)
                for word in ("--native", "--watch", "--observability", "down", "doctor", "Examples"):
                    self.assertIn(word, run.stdout)

    def test_an_unknown_argument_prints_the_usage_to_stderr_and_exits_2(self):
        run = dev("--bogus")

        self.assertEqual(run.returncode, 2)
        self.assertEqual(run.stdout, "")
        self.assertIn("unknown argument '--bogus'", run.stderr)
        self.assertIn("usage: ./dev.sh", run.stderr)

    def test_watch_with_another_mode_than_native_exits_2(self):
        self.assertEqual(dev("down", "--watch").returncode, 2)
        self.assertEqual(dev("doctor", "down").returncode, 2)


class DoctorTest(unittest.TestCase):
    def test_doctor_finds_everything_required_on_this_machine(self):
        run = dev("doctor")

        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        checks = run.stdout.splitlines()[1:-1]
        self.assertGreaterEqual(len(checks), 15)
        for line in checks:
            self.assertRegex(line, r"^(ok|missing|problem) ")
            if not line.startswith("ok"):
                self.assertIn("; fix: ", line)
                self.assertIn("optional", line)

    def test_doctor_without_cargo_and_rustup_fails_and_says_how_to_get_them(self):
        path = [d for d in os.environ["PATH"].split(":") if d and not (
            Path(d, "cargo").exists() or Path(d, "rustup").exists())]
        if any(d in ("/usr/bin", "/bin") for d in os.environ["PATH"].split(":") if d not in path):
            self.skipTest("cargo is installed in a system folder here")

        run = dev("doctor", env=dict(os.environ, PATH=":".join(path)))

        self.assertEqual(run.returncode, 1, run.stdout)
        self.assertRegex(run.stdout, r"(?m)^missing  cargo .*; fix: curl .*sh\.rustup\.rs \| sh$")
        self.assertRegex(run.stdout, r"(?m)^missing  the wasm32-wasip2 target.*; fix: rustup target add wasm32-wasip2$")


class ServicesTest(unittest.TestCase):
    def test_platform_services_prints_one_service_a_line_sorted_from_deploy_manifests(self):
        run = subprocess.run(
            ["bash", "-c", 'set -euo pipefail; source "$1"; platform_services', "_", str(ENSURE)],
            cwd="/", capture_output=True, text=True, check=True,
        )
        services = run.stdout.splitlines()

        self.assertIn("orders", services)
        self.assertIn("invoices", services)
        self.assertEqual(services, sorted(services))
        self.assertEqual(services, sorted(p.stem for p in (ROOT / "deploy" / "manifests").glob("*.toml")))

    def test_dev_sh_serves_the_services_of_the_manifests(self):
        manifests = sorted(p.stem for p in (ROOT / "deploy" / "manifests").glob("*.toml"))

        run = dev("--help")

        self.assertIn(f"(deploy/manifests/<name>.toml): {' '.join(manifests)}\n", run.stdout)


class SyntaxTest(unittest.TestCase):
    def test_dev_sh_and_ensure_sh_pass_bash_n(self):
        for script in (DEV, ENSURE):
            with self.subTest(script.name):
                run = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
                self.assertEqual(run.returncode, 0, run.stderr)

    def test_dev_sh_uses_nothing_bash_3_2_lacks(self):
        # bash 4 and later only: mapfile/readarray, associative arrays and namerefs, case
        # conversion, |& and &>>, ;& and ;;& in case, coproc; GNU timeout is not on macOS.
        forbidden = re.compile(
            r"\b(mapfile|readarray|coproc)\b|\b(declare|local|typeset) -[a-zA-Z]*[An]"
            r"|\$\{[^}]*(,,|\^\^|@[QEPAa])\}|\|&|&>>|;;&|[^;];&|^\s*timeout\s|\|\s*timeout\s|/proc/"
        )
        code = [line for line in DEV.read_text().splitlines() if not line.lstrip().startswith("#")]
        offending = [line for line in code if forbidden.search(line)]

        self.assertEqual(offending, [])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Stands in for target/debug/host: answers /health, records SIGTERM and exits 0 on it.
FAKE_HOST = """#!/usr/bin/env python3
import http.server, os, signal
port = int(os.environ["HOST_LISTEN"].rsplit(":", 1)[1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
def stop(*args):
    with open(os.environ["FAKE_HOST_RECORD"], "a") as record:
        record.write("TERM\\n")
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""

# run_native with everything but the watcher faked: nothing installed, no database, no cargo;
# build_components records its arguments and fails for a component named in $TREE/fail.
RUN_NATIVE = r"""
source "$DEV"
cd "$TREE"
for f in ensure_wasm_target ensure_postgres ensure_rabbitmq ensure_rabbitmq_management \
  ensure_broker_users ensure_service_databases cargo; do
  eval "$f() { :; }"
done
build_components() {
  echo "$*" >>"$TREE/builds"
  if [ -f "$TREE/fail" ] && [ "$2" = "$(cat "$TREE/fail")" ]; then
    echo "error[E0308]: mismatched types in $2" >&2
    return 101
  fi
}
WATCH=1
OBSERVABILITY=0
run_native
"""


class WatchTest(unittest.TestCase):
    """./dev.sh --watch, as run_native runs it, in a copy of the tree's shape with a fake host."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tree = Path(tmp.name)
        for crate in ("orders", "invoices", "guest"):
            (self.tree / "components" / crate / "src").mkdir(parents=True)
            (self.tree / "components" / crate / "src" / "lib.rs").write_text("// v1\n")
        for service in ("orders", "invoices"):
            (self.tree / "components" / service / "Cargo.toml").write_text(
                '[dependencies]\nservice-guest = { path = "../guest" }\n')
        (self.tree / "wit").mkdir()
        (self.tree / "contracts").mkdir()
        host = self.tree / "target" / "debug" / "host"
        host.parent.mkdir(parents=True)
        host.write_text(FAKE_HOST)
        host.chmod(0o755)
        self.record = self.tree / "host-record"
        self.builds = self.tree / "builds"
        self.stderr_path = self.tree / "stderr"
        env = dict(
            os.environ,
            DEV=str(DEV),
            TREE=str(self.tree),
            FAKE_HOST_RECORD=str(self.record),
            HOST_LISTEN=f"127.0.0.1:{free_port()}",
        )
        with open(self.stderr_path, "w") as stderr:
            # A session of its own, so that Ctrl-C can be sent to its process group.
            self.dev = subprocess.Popen(
                ["bash", "-c", RUN_NATIVE], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True,
            )
        self.addCleanup(self.kill_leftovers)
        self.wait_for_stderr("watching ")
        self.host_pid = int((self.tree / ".dev" / "host.pid").read_text())

    def kill_leftovers(self):
        if self.dev.poll() is None:
            os.killpg(self.dev.pid, signal.SIGKILL)
            self.dev.wait()
        try:
            os.kill(self.host_pid, signal.SIGKILL)
        except (ProcessLookupError, AttributeError):
            pass

    def stderr(self):
        return self.stderr_path.read_text()

    def wait_for_stderr(self, text, seconds=20):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.stderr():
                return
            if self.dev.poll() is not None:
                break
            time.sleep(0.1)
        self.fail(f"no {text!r} on stderr:\n{self.stderr()}")

    def builds_after(self, action):
        self.builds.write_text("")
        action()
        return self.builds.read_text().splitlines()

    def edit(self, path):
        (self.tree / path).write_text(f"// edited at {time.time()}\n")

    def test_an_edited_component_is_rebuilt_alone_and_said_so_in_one_line(self):
        def edit_orders():
            self.edit("components/orders/src/lib.rs")
            self.wait_for_stderr("rebuild orders: ok in ")

        builds = self.builds_after(edit_orders)

        self.assertEqual({b.split()[1] for b in builds}, {"orders"})
        self.assertRegex(self.stderr(), r"(?m)^rebuild orders: ok in \d+ s")

    def test_a_shared_crate_or_wit_rebuilds_every_service(self):
        for path in ("components/guest/src/lib.rs", "wit/platform.wit"):
            with self.subTest(path):
                before = self.stderr().count("rebuild invoices: ok")

                def edit_shared():
                    self.edit(path)
                    deadline = time.monotonic() + 20
                    while self.stderr().count("rebuild invoices: ok") == before:
                        self.assertLess(time.monotonic(), deadline, self.stderr())
                        time.sleep(0.1)
                    self.wait_for_stderr("rebuild orders: ok in ")

                builds = self.builds_after(edit_shared)

                self.assertEqual({b.split()[1] for b in builds}, {"orders", "invoices"})

    def test_a_failed_build_prints_the_compiler_errors_and_keeps_the_host(self):
        (self.tree / "fail").write_text("invoices")
        self.edit("components/invoices/src/lib.rs")

        self.wait_for_stderr("rebuild invoices: failed in ")

        errors = self.stderr()
        self.assertLess(errors.index("error[E0308]: mismatched types in invoices"),
                        errors.index("rebuild invoices: failed in "))
        self.assertIsNone(self.dev.poll())
        os.kill(self.host_pid, 0)

    def test_editor_swap_files_rebuild_nothing(self):
        def write_swap_file():
            (self.tree / "components/orders/src/.lib.rs.swp").write_text("swap")
            time.sleep(2.5)

        self.assertEqual(self.builds_after(write_swap_file), [])

    def test_a_file_dated_in_the_future_is_not_rebuilt_every_second(self):
        def date_a_file_an_hour_ahead():
            future = time.time() + 3600
            os.utime(self.tree / "components/orders/src/lib.rs", (future, future))
            time.sleep(3.5)

        self.assertEqual(self.builds_after(date_a_file_an_hour_ahead), [])

    def test_ctrl_c_stops_the_watcher_and_the_host_which_is_waited_for(self):
        os.killpg(self.dev.pid, signal.SIGINT)

        status = self.dev.wait(timeout=20)

        self.assertEqual(status, 0, self.stderr())
        self.assertEqual(self.record.read_text(), "TERM\n")
        with self.assertRaises(ProcessLookupError):
            os.kill(self.host_pid, 0)
        self.assertFalse((self.tree / ".dev" / "host.pid").exists())

    def test_the_watcher_ends_when_the_host_stops_by_itself(self):
        os.kill(self.host_pid, signal.SIGTERM)

        status = self.dev.wait(timeout=20)

        self.assertEqual(status, 0, self.stderr())


@unittest.skipUnless(shutil.which("bash"), "needs bash")
class WithTimeoutTest(unittest.TestCase):
    def test_without_timeout_installed_the_command_runs_without_a_limit(self):
        # A PATH holding only what the function needs besides timeout and gtimeout.
        with tempfile.TemporaryDirectory() as bin_dir:
            os.symlink(shutil.which("true"), Path(bin_dir, "true"))
            run = subprocess.run(
                [shutil.which("bash"), "-c", 'source "$1"; with_timeout 5 true', "_", str(ENSURE)],
                env=dict(os.environ, PATH=bin_dir), capture_output=True, text=True,
            )
        self.assertEqual(run.returncode, 0, run.stderr)


if __name__ == "__main__":
    unittest.main()
