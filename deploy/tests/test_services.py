"""The one list of services, deploy/manifests, and what derives from it.

- On this repository, `scripts/services.py sync --check` finds every derived file (compose.yaml,
  kong/kong.yml, Prometheus's targets, init.sql, RabbitMQ's definitions) as sync writes it, and
  `list` is the manifests.
- On a copy of the repository (its files as they are on disk, without what git ignores),
  `scripts/new-service.sh` adds services, one with a route of its own and a '-' in its name and
  one with topics, and then every derived file names them, the existing services keep their
  ports, and the other tests of this folder pass on the copy. Names and routes it must refuse
  leave the copy as it was, and a step that fails is undone.

Run from the repository root: target/tools/venv/bin/python -m unittest discover -s deploy/tests -v
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path

import yaml

import stack
from stack import ROOT

SERVICES = ["scripts/services.py"]
NEW_SERVICE = ["bash", "scripts/new-service.sh"]
# Left out of a copy when the repository is not a git checkout.
NOT_COPIED = (".git", "target", ".dev", "node_modules", "__pycache__")


def run(command, cwd=ROOT, check=True):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def services_py(*arguments, cwd=ROOT, check=True):
    return run([sys.executable, *SERVICES, *arguments], cwd=cwd, check=check)


def copy_repository(into):
    """The repository's files as they are on disk, without what git ignores (build output, the
    tools' virtual environment), into the folder `into`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, timeout=60)
    if listed.returncode == 0:
        for name in listed.stdout.decode().split("\0"):
            source = ROOT / name
            if name and source.is_file():
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, into / name)
    else:
        shutil.copytree(ROOT, into, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))


def snapshot(root):
    """{file: SHA-256} of every file under `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class SyncTest(unittest.TestCase):
    def test_every_derived_file_is_as_sync_writes_it_from_the_manifests(self):
        done = services_py("sync", "--check", check=False)
        self.assertEqual(done.returncode, 0, f"run python3 scripts/services.py sync:\n{done.stderr}")

    def test_the_list_is_the_manifests(self):
        manifests = stack.manifest_components()
        self.assertEqual(services_py("list").stdout.split(), sorted(manifests))
        routes = [line.split() for line in services_py("list", "--routes").stdout.splitlines()]
        self.assertEqual(routes, [[name, manifests[name]["route"]] for name in sorted(manifests)])
        shown = json.loads(services_py("list", "--json").stdout)
        self.assertEqual([s["name"] for s in shown], sorted(manifests))
        for service in shown:
            with self.subTest(service=service["name"]):
                self.assertEqual([port for _, port in stack.published_ports(service["name"])],
                                 [service["compose_admin_port"]])

    def test_check_names_a_file_edited_by_hand_and_sync_writes_it_back(self):
        with tempfile.TemporaryDirectory(prefix="services-sync-") as folder:
            root = Path(folder)
            for path in ["scripts/services.py", "observability/prometheus/admin-token", "deploy/manifests",
                         "compose.yaml", "kong/kong.yml", "observability/prometheus/prometheus.yml",
                         "deploy/postgres/init.sql", "deploy/rabbitmq/definitions.json"]:
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (ROOT / path).is_dir() else shutil.copy)(ROOT / path, root / path)
            kong = root / "kong" / "kong.yml"
            written = kong.read_text(encoding="utf-8")
            kong.write_text(written.replace("paths: [/orders]", "paths: [/order]"), encoding="utf-8")
            done = services_py("sync", "--check", cwd=root, check=False)
            self.assertEqual(done.returncode, 1)
            self.assertIn("kong/kong.yml", done.stderr)
            self.assertNotIn("compose.yaml", done.stderr)
            self.assertEqual(services_py("sync", cwd=root).stdout.strip(), "wrote kong/kong.yml")
            self.assertEqual(kong.read_text(encoding="utf-8"), written)
            self.assertEqual(services_py("sync", "--check", cwd=root).returncode, 0)

    def test_the_broker_passwords_are_the_local_defaults(self):
        users = {user["name"]: user for user in stack.rabbitmq_definitions()["users"]}
        for name in stack.manifest_components():
            with self.subTest(service=name):
                self.assertTrue(stack.password_matches(users[name], f"{name}-dev"))


class NewServiceTest(unittest.TestCase):
    """scripts/new-service.sh, run on a copy of the repository."""

    ADDED = {"shipping": "/shipping", "parcel-lockers": "/lockers", "returns": "/returns"}

    @classmethod
    def setUpClass(cls):
        cls.copy = Path(tempfile.mkdtemp(prefix="new-service-"))
        cls.addClassCleanup(shutil.rmtree, cls.copy, ignore_errors=True)
        # The servers the other tests start run as accounts of their own: they may read it.
        cls.copy.chmod(0o755)
        copy_repository(cls.copy)
        cls.before = snapshot(cls.copy)
        cls.outputs = [
            run(NEW_SERVICE + ["shipping"], cwd=cls.copy),
            run(NEW_SERVICE + ["parcel-lockers", "--route", "/lockers"], cwd=cls.copy),
            run(NEW_SERVICE + ["returns", "--publishes", "returns.opened", "--subscribes", "orders.created"],
                cwd=cls.copy),
        ]
        cls.after = snapshot(cls.copy)

    def read(self, path):
        return (self.copy / path).read_text(encoding="utf-8")

    def yaml(self, path):
        return stack.interpolate(yaml.safe_load(self.read(path)))

    def test_it_says_what_to_do_next(self):
        output = self.outputs[0].stdout
        self.assertIn("cargo build --profile component --target wasm32-wasip2 -p shipping", output)
        self.assertIn("./dev.sh", output)
        self.assertIn("http://localhost:8000/shipping/docs", output)

    def test_the_copy_stays_in_sync(self):
        self.assertEqual(services_py("sync", "--check", cwd=self.copy).returncode, 0)
        self.assertEqual(services_py("list", cwd=self.copy).stdout.split(),
                         sorted(set(stack.manifest_components()) | set(self.ADDED)))

    def test_each_new_service_has_its_crate_manifest_and_native_entry(self):
        members = tomllib.loads(self.read("Cargo.toml"))["workspace"]["members"]
        native = {c["name"]: c for c in tomllib.loads(self.read("host.toml"))["components"]}
        for name, route in self.ADDED.items():
            crate = name.replace("-", "_")
            with self.subTest(service=name):
                self.assertIn(f"components/{name}", members)
                package = tomllib.loads(self.read(f"components/{name}/Cargo.toml"))["package"]
                self.assertEqual(package["name"], name)
                lib = self.read(f"components/{name}/src/lib.rs")
                self.assertIn(f'const SERVICE: &str = "{name}";', lib)
                self.assertNotRegex(lib, r'"template"|\bTemplate\b')
                self.assertTrue(list((self.copy / "components" / name / "migrations").glob("V1__*.sql")))
                (component,) = tomllib.loads(self.read(f"deploy/manifests/{name}.toml"))["components"]
                self.assertEqual((component["name"], component["route"]), (name, route))
                self.assertEqual(component["wasm"], f"/app/components/{crate}.wasm")
                self.assertEqual(component["database_url"], f"postgres://{crate}@postgres:5432/{crate}")
                self.assertEqual(native[name]["route"], route)
                self.assertEqual(native[name]["wasm"], f"target/wasm32-wasip2/component/{crate}.wasm")
                self.assertEqual(native[name]["migrations"], f"components/{name}/migrations")

    def test_only_a_service_given_topics_uses_messaging(self):
        for name in ("shipping", "parcel-lockers"):
            manifest = tomllib.loads(self.read(f"deploy/manifests/{name}.toml"))
            self.assertNotIn("publishes", manifest["components"][0])
            self.assertNotIn("subscriptions", manifest["components"][0])
        manifest = tomllib.loads(self.read("deploy/manifests/returns.toml"))
        self.assertEqual(manifest["components"][0]["publishes"], ["returns.opened"])
        self.assertEqual(manifest["components"][0]["subscriptions"], ["orders.created"])
        self.assertEqual(manifest["messaging"]["publishers"], {"orders.created": "orders"})
        native = {c["name"]: c for c in tomllib.loads(self.read("host.toml"))["components"]}
        self.assertEqual(native["returns"]["amqp_url"], "amqp://returns:returns-dev@localhost:5672/%2f")
        self.assertNotIn("amqp_url", native["shipping"])

    def test_every_derived_file_names_each_new_service(self):
        compose = self.yaml("compose.yaml")["services"]
        kong = {s["name"]: s for s in self.yaml("kong/kong.yml")["services"]}
        targets = self.yaml("observability/prometheus/prometheus.yml")["scrape_configs"][0]["static_configs"][0]
        init = self.read("deploy/postgres/init.sql")
        definitions = json.loads(self.read("deploy/rabbitmq/definitions.json"))
        for name, route in self.ADDED.items():
            crate, prefix = name.replace("-", "_"), name.upper().replace("-", "_")
            with self.subTest(service=name):
                self.assertEqual(kong[name]["url"], f"http://{name}:8000{route}")
                self.assertEqual([(r["name"], r["paths"]) for r in kong[name]["routes"]], [(name, [route])])
                host = compose[name]
                self.assertEqual(host["image"], compose["orders"]["image"])
                self.assertEqual(host["environment"]["HOST_CONFIG"], f"/app/manifests/{name}.toml")
                self.assertEqual(host["environment"][f"{prefix}_DATABASE_URL"],
                                 f"postgres://{crate}:{name}-dev@postgres:5432/{crate}")
                self.assertEqual(host["environment"][f"{prefix}_AMQP_URL"],
                                 f"amqp://{name}:{name}-dev@rabbitmq:5672/%2f")
                self.assertIn(f"./components/{name}/migrations:/app/migrations/{name}:ro", host["volumes"])
                self.assertEqual(host["healthcheck"]["test"], ["CMD", "/app/host", "probe"])
                self.assertRegex(host["ports"][0], r"^127\.0\.0\.1:90\d\d:9000$")
                self.assertEqual(compose["kong"]["depends_on"][name], {"condition": "service_healthy"})
                self.assertIn(f"{name}:9000", targets["targets"])
                self.assertRegex(init, rf"CREATE ROLE {crate} LOGIN PASSWORD '{name}-dev'")
                self.assertIn(f"CREATE DATABASE {crate} OWNER {crate};", init)
                self.assertIn(f"ALTER ROLE {crate} SET statement_timeout = '30s';", init)
                self.assertIn(name, [u["name"] for u in definitions["users"]])
                self.assertIn(name, [p["user"] for p in definitions["permissions"]])

    def test_the_existing_hosts_keep_their_ports_and_the_build(self):
        before = stack.services()
        after = self.yaml("compose.yaml")["services"]
        for name in stack.host_services():
            with self.subTest(host=name):
                self.assertEqual(after[name]["ports"], before[name]["ports"])
                self.assertEqual("build" in after[name], "build" in before[name])
        ports = [after[name]["ports"][0] for name in set(stack.host_services()) | set(self.ADDED)]
        self.assertEqual(len(ports), len(set(ports)))

    def test_it_changes_only_the_files_it_names(self):
        changed = {path for path in set(self.before) | set(self.after) if self.before.get(path) != self.after.get(path)}
        expected = {"Cargo.toml", "host.toml", "compose.yaml", "kong/kong.yml", "observability/prometheus/prometheus.yml",
                    "deploy/postgres/init.sql", "deploy/rabbitmq/definitions.json"}
        expected |= {f"deploy/manifests/{name}.toml" for name in self.ADDED}
        crates = {path for path in changed if re.match(rf"components/({'|'.join(self.ADDED)})/", path)}
        self.assertEqual(changed - crates, expected)

    def test_the_cross_checks_of_this_folder_pass_on_the_copy(self):
        # Kong against compose and the manifests, the image's contents, the databases: what a
        # new service could break. (test_rabbitmq boots a broker node, for a file the test
        # above already compares with what sync writes.)
        modules = ["test_image", "test_postgres_init", "test_stack"]
        done = run([sys.executable, "-m", "unittest", *modules], cwd=self.copy / "deploy" / "tests", check=False)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr[-6000:])

    def refused(self, *arguments):
        """Runs new-service.sh, which must refuse and leave the copy as it was; its message."""
        before = snapshot(self.copy)
        done = run(NEW_SERVICE + list(arguments), cwd=self.copy, check=False)
        self.assertNotEqual(done.returncode, 0, done.stdout)
        self.assertEqual(snapshot(self.copy), before, "a refused run changed files")
        return done.stderr

    def test_it_refuses_names_that_are_not_plain_or_are_taken_or_reserved(self):
        for name in ("Shipping", "1shipping", "ship_ping", "ship--ping", "shipping-", "-shipping", "a" * 64):
            with self.subTest(name=name):
                self.assertIn("lower-case", self.refused(name))
        for name in ("orders", "shipping"):
            with self.subTest(name=name):
                self.assertIn("already", self.refused(name))
        for name in ("template", "postgres", "kong", "host", "user", "fn", "test", "pg-stats"):
            with self.subTest(name=name):
                self.assertIn("reserved", self.refused(name))

    def test_it_refuses_routes_of_health_or_nested_with_anothers(self):
        for route in ("/health", "/healthz", "/health/x"):
            with self.subTest(route=route):
                self.assertIn("/health", self.refused("tracking", "--route", route))
        for route in ("/orders", "/orders/tracking", "/lockers/x", "/"):
            with self.subTest(route=route):
                self.refused("tracking", "--route", route)
        for route in ("tracking", "/tracking/", "/Tracking", "/a//b"):
            with self.subTest(route=route):
                self.assertIn("route", self.refused("tracking", "--route", route))

    def test_it_refuses_topics_with_no_publisher_or_another_publisher(self):
        self.assertIn("no service publishes", self.refused("tracking", "--subscribes", "nobody.publishes"))
        self.assertIn("one publisher", self.refused("tracking", "--publishes", "orders.created"))
        self.assertIn("topic", self.refused("tracking", "--publishes", "not a topic"))

    def test_a_step_that_fails_is_undone(self):
        init = self.copy / "deploy" / "postgres" / "init.sql"
        written = init.read_text(encoding="utf-8")
        # sync, the last step, cannot find its block in init.sql.
        init.write_text(written.replace("-- END roles", "-- END"), encoding="utf-8")
        try:
            before = snapshot(self.copy)
            done = run(NEW_SERVICE + ["tracking"], cwd=self.copy, check=False)
            self.assertNotEqual(done.returncode, 0)
            self.assertIn("undoing", done.stderr)
            self.assertEqual(snapshot(self.copy), before)
        finally:
            init.write_text(written, encoding="utf-8")


if __name__ == "__main__":
    unittest.main()
