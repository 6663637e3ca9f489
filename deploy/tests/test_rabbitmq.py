"""Compose's RabbitMQ users: the definitions file the node imports at every start, through the
configuration file compose mounts. Each host container logs in as the broker user named after
its component (the host refuses any other, and RabbitMQ checks the `user_id` the host stamps on
every event against that login), with the password its <NAME>_AMQP_URL carries and the
permissions docs/security.md gives, no more; guest stays as the administrator of the management
UI. Read as files, then imported for real by a throwaway node of this machine's RabbitMQ (Debian's
`rabbitmq-server`, which ./test.sh installs; the definitions format is the same as 4.1's).

Run from the repository root: target/tools/venv/bin/python -m unittest discover -s deploy/tests -v
"""

import base64
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from urllib.parse import unquote, urlsplit

import stack
from stack import ROOT

DEFINITIONS = "deploy/rabbitmq/definitions.json"
# rabbitmq:4.1: a blank node with definitions to import creates no default user or vhost.
RABBITMQ_IMAGE = "rabbitmq:4.1-management"
VHOST = "/"
# What a component's user may do on the vhost, NAME being the component: declare the exchange and
# its own queues, publish to the exchange and (retries, dead letters) through the default
# exchange, and read the exchange and its own queues. docs/security.md's rabbitmqctl commands say
# the same.
PERMISSIONS = {
    "configure": r"^platform\.events(\.NAME\..*)?$",
    "write": r"^(platform\.events|platform\.events\.NAME\..*|amq\.default)$",
    "read": r"^(platform\.events|platform\.events\.NAME\..*)$",
}
# The top-level keys of a definitions file (rabbit_definitions).
DEFINITION_KEYS = {"rabbit_version", "rabbitmq_version", "product_name", "product_version", "users", "vhosts",
                   "permissions", "topic_permissions", "parameters", "global_parameters", "policies", "queues",
                   "exchanges", "bindings"}


def definitions():
    return stack.rabbitmq_definitions()


def users():
    return {user["name"]: user for user in definitions().get("users") or []}


def permissions(user):
    return [p for p in definitions().get("permissions") or [] if p["user"] == user]


def expected_permissions(component):
    return {kind: pattern.replace("NAME", component) for kind, pattern in PERMISSIONS.items()}


def tags(user):
    found = user.get("tags") or []
    return sorted(found if isinstance(found, list) else [t.strip() for t in found.split(",") if t.strip()])


def administrators():
    return sorted(name for name, user in users().items() if "administrator" in tags(user))


def components():
    """(host service, component name, parsed broker URL) of every component of every host."""
    for host in stack.host_services():
        for component in stack.host_config(host)["components"]:
            yield host, component["name"], urlsplit(component["amqp_url"])


class DefinitionsTest(unittest.TestCase):
    def test_compose_imports_the_definitions_through_its_mounted_configuration(self):
        self.assertEqual(stack.services()["rabbitmq"]["image"], RABBITMQ_IMAGE,
                         "a new RabbitMQ image: check how it imports definitions and seeds its default user")
        self.assertEqual(stack.rabbitmq_definitions_file(), ROOT / DEFINITIONS,
                         "RabbitMQ's mounted configuration names no definitions file, or not this one")
        for source, target, read_only in stack.volumes("rabbitmq"):
            if stack.is_bind(source):
                with self.subTest(target=target):
                    self.assertTrue(read_only)
                    self.assertTrue(target.startswith("/etc/rabbitmq/"), target)

    def test_the_file_holds_only_what_rabbitmq_imports(self):
        self.assertLessEqual(set(definitions()), DEFINITION_KEYS)
        self.assertIn(VHOST, [v["name"] for v in definitions().get("vhosts") or []],
                      "a node with definitions to import makes no vhost of its own")
        names = [user["name"] for user in definitions().get("users") or []]
        self.assertEqual(len(names), len(set(names)), "a user is defined twice")
        vhosts = {v["name"] for v in definitions()["vhosts"]}
        for user in definitions()["users"]:
            with self.subTest(user=user["name"]):
                self.assertLessEqual(set(user), {"name", "password_hash", "hashing_algorithm", "tags", "limits"})
                self.assertEqual(user.get("hashing_algorithm"), "rabbit_password_hashing_sha256")
                self.assertEqual(len(base64.b64decode(user["password_hash"], validate=True)), 4 + 32,
                                 "a 4-byte salt and a SHA-256")
        for permission in definitions().get("permissions") or []:
            with self.subTest(permission=permission):
                self.assertIn(permission["user"], names)
                self.assertIn(permission["vhost"], vhosts)
                for kind in PERMISSIONS:
                    re.compile(permission[kind])

    def test_guest_is_an_administrator_with_every_permission_on_the_vhost(self):
        # The management UI's login, guest / guest, as compose.yaml and the README say.
        self.assertIn("guest", administrators(), "no administrator for the management UI")
        self.assertTrue(stack.password_matches(users()["guest"], "guest"))
        self.assertEqual([(p["vhost"], p["configure"], p["write"], p["read"]) for p in permissions("guest")],
                         [(VHOST, ".*", ".*", ".*")])

    def test_each_host_logs_in_as_its_components_user_with_the_password_defined(self):
        for host, component, url in components():
            with self.subTest(host=host, component=component):
                self.assertEqual(unquote(url.username or ""), component, "the host refuses any other user")
                self.assertEqual(unquote(url.path[1:]), VHOST)
                self.assertIn(component, users(), f"{DEFINITIONS} has no user {component}")
                self.assertTrue(stack.password_matches(users()[component], unquote(url.password or "")),
                                f"not the password of {component} in {DEFINITIONS}")

    def test_no_broker_url_of_a_host_container_names_another_user(self):
        for host in stack.host_services():
            names = [c["name"] for c in stack.host_config(host)["components"]]
            for where, url in stack.broker_urls(host):
                with self.subTest(host=host, setting=where):
                    self.assertEqual([unquote(urlsplit(url).username or "")], names)

    def test_each_components_user_has_exactly_its_permissions_and_no_tags(self):
        for host, component, _url in components():
            with self.subTest(host=host, component=component):
                self.assertEqual(tags(users()[component]), [], "a component's user gets no tags")
                found = [{k: v for k, v in p.items() if k != "user"} for p in permissions(component)]
                self.assertEqual(found, [dict(vhost=VHOST, **expected_permissions(component))])
                topic = [p for p in definitions().get("topic_permissions") or [] if p["user"] == component]
                self.assertEqual(topic, [])

    def test_every_user_is_an_administrator_or_a_components(self):
        expected = set(administrators()) | {component for _, component, _ in components()}
        self.assertEqual(set(users()), expected)

    def test_the_patterns_reach_the_exchange_and_the_components_own_queues_alone(self):
        hosts = list(components())
        for host, component, _url in hosts:
            config = stack.host_config(host)
            exchange = config["messaging"].get("exchange", "platform.events")
            allowed = expected_permissions(component)
            own = [f"{exchange}.{component}.{topic}{suffix}"
                   for c in config["components"] if c["name"] == component
                   for topic in c.get("subscriptions") or []
                   for suffix in ("", ".retry.1000ms", ".dead")]
            others = [f"{exchange}.{other}.some.topic" for _, other, _ in hosts if other != component]
            with self.subTest(component=component):
                # A component that subscribes to nothing has no queues: the exchange alone.
                for kind, pattern in allowed.items():
                    for name in [exchange] + own:
                        self.assertRegex(name, pattern, kind)
                    for name in others + [f"{exchange}x", f"{exchange}.{component}", "amq.topic", f"x.{exchange}"]:
                        self.assertNotRegex(name, pattern, kind)
                self.assertRegex("amq.default", allowed["write"])
                self.assertNotRegex("amq.default", allowed["read"])
                self.assertNotRegex("amq.default", allowed["configure"])

    def test_the_password_hash_is_rabbitmqs(self):
        # rabbit_password_hashing_sha256, as the node checks it: salt, then SHA-256(salt + password).
        salt = bytes.fromhex("908d0c6f")
        user = {"hashing_algorithm": "rabbit_password_hashing_sha256",
                "password_hash": stack.password_hash("orders-dev", salt)}
        self.assertTrue(stack.password_matches(user, "orders-dev"))
        self.assertFalse(stack.password_matches(user, "orders-dev "))
        self.assertEqual(base64.b64decode(user["password_hash"])[:4], salt)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_binaries():
    """The folder of rabbitmq-server and rabbitmqctl themselves (not Debian's wrappers, which
    would run the machine's own node), or None."""
    for folder in ("/usr/lib/rabbitmq/bin", os.path.dirname(shutil.which("rabbitmq-server") or "")):
        if folder and os.path.isfile(os.path.join(folder, "rabbitmq-server")) and \
                os.path.isfile(os.path.join(folder, "rabbitmqctl")):
            return folder
    return None


class DefinitionsOnRabbitMQTest(unittest.TestCase):
    """The definitions imported by a fresh node, as compose's RabbitMQ imports them at start."""

    @classmethod
    def setUpClass(cls):
        binaries = server_binaries()
        if binaries is None:
            raise unittest.SkipTest("RabbitMQ is not installed (ensure_rabbitmq installs it)")
        cls.folder = tempfile.mkdtemp(prefix="definitions-")
        cls.addClassCleanup(shutil.rmtree, cls.folder, ignore_errors=True)
        # As root, run the node as the `rabbitmq` account, which owns the folder.
        cls.as_server = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("rabbitmq")
            cls.as_server = ["runuser", "-u", "rabbitmq", "--"]
        os.chmod(cls.folder, 0o700)
        shutil.copy(ROOT / DEFINITIONS, os.path.join(cls.folder, "definitions.json"))
        # The mounted configuration, with the definitions file where this node finds it.
        settings = dict(stack.rabbitmq_config())
        for key in ("load_definitions", "definitions.local.path"):
            if key in settings:
                settings[key] = os.path.join(cls.folder, "definitions.json")
        settings["listeners.tcp.default"] = f"127.0.0.1:{free_port()}"
        with open(os.path.join(cls.folder, "rabbitmq.conf"), "w", encoding="utf-8") as file:
            file.writelines(f"{key} = {value}\n" for key, value in settings.items())
        with open(os.path.join(cls.folder, "enabled_plugins"), "w", encoding="utf-8") as file:
            file.write("[].\n")
        if cls.as_server:
            for path in [cls.folder] + [os.path.join(cls.folder, f) for f in os.listdir(cls.folder)]:
                os.chown(path, account.pw_uid, account.pw_gid)
        cls.node = f"deploy-tests-{os.getpid()}@localhost"
        # Everything the node keeps, in the folder; none of the machine's own node's settings.
        cls.env = [f"HOME={cls.folder}", f"RABBITMQ_NODENAME={cls.node}", "RABBITMQ_USE_LONGNAME=false",
                   f"RABBITMQ_CONF_ENV_FILE={cls.folder}/rabbitmq-env.conf",
                   f"RABBITMQ_CONFIG_FILE={cls.folder}/rabbitmq.conf", f"RABBITMQ_CONFIG_FILES={cls.folder}/conf.d",
                   f"RABBITMQ_ADVANCED_CONFIG_FILE={cls.folder}/advanced.config",
                   f"RABBITMQ_ENABLED_PLUGINS_FILE={cls.folder}/enabled_plugins",
                   f"RABBITMQ_MNESIA_BASE={cls.folder}/mnesia", f"RABBITMQ_LOG_BASE={cls.folder}/log",
                   f"RABBITMQ_PID_FILE={cls.folder}/pid", f"RABBITMQ_DIST_PORT={free_port()}"]
        cls.ctl_binary = os.path.join(binaries, "rabbitmqctl")
        # Run from the node's folder: Erlang reads its working directory, which the `rabbitmq`
        # account may not be allowed to read elsewhere.
        subprocess.run([*cls.as_server, "env", *cls.env, os.path.join(binaries, "rabbitmq-server"), "-detached"],
                       check=True, capture_output=True, timeout=60, cwd=cls.folder)
        cls.addClassCleanup(cls.stop)
        # `await_startup` waits for a booting node, but fails at once until the node has registered.
        deadline = time.monotonic() + 120
        while (done := cls.ctl("await_startup", "--timeout", "120", check=False)).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the node did not start:\n{done.stdout}{done.stderr}{cls.log()}")
            time.sleep(1)

    @classmethod
    def ctl(cls, *arguments, check=True):
        done = subprocess.run([*cls.as_server, "env", *cls.env, cls.ctl_binary, "-n", cls.node, "-q", *arguments],
                              capture_output=True, text=True, timeout=150, cwd=cls.folder)
        if check and done.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(arguments)} failed:\n{done.stdout}{done.stderr}")
        return done

    @classmethod
    def stop(cls):
        if cls.ctl("stop", check=False).returncode == 0:
            return
        # The node this test started, by the process id it wrote.
        try:
            with open(os.path.join(cls.folder, "pid"), encoding="utf-8") as file:
                os.kill(int(file.read().strip()), 9)
        except (OSError, ValueError):
            pass

    @classmethod
    def log(cls):
        folder = os.path.join(cls.folder, "log")
        if not os.path.isdir(folder):
            return ""
        return "".join(open(os.path.join(folder, f), encoding="utf-8", errors="replace").read()[-4000:]
                       for f in sorted(os.listdir(folder)))

    def json(self, *arguments):
        return json.loads(self.ctl(*arguments, "--formatter", "json").stdout)

    def test_the_node_has_the_defined_users_and_no_other(self):
        found = {user["user"]: sorted(user["tags"]) for user in self.json("list_users")}
        self.assertEqual(found, {name: tags(user) for name, user in users().items()})

    def test_each_host_and_guest_log_in_with_their_passwords(self):
        logins = [(component, unquote(url.password or "")) for _, component, url in components()]
        for user, password in logins + [("guest", "guest")]:
            with self.subTest(user=user):
                done = self.ctl("authenticate_user", user, password, check=False)
                self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
                self.assertNotEqual(self.ctl("authenticate_user", user, password + "x", check=False).returncode, 0)

    def test_the_permissions_are_the_defined_ones(self):
        found = {p["user"]: (p["configure"], p["write"], p["read"]) for p in self.json("list_permissions", "-p", VHOST)}
        self.assertEqual(found["guest"], (".*", ".*", ".*"))
        for _, component, _ in components():
            with self.subTest(component=component):
                expected = expected_permissions(component)
                self.assertEqual(found.get(component), (expected["configure"], expected["write"], expected["read"]))


if __name__ == "__main__":
    unittest.main()
