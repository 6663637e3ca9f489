"""compose.yaml, kong/kong.yml, the container manifests and Prometheus's scrape configuration,
checked offline with the tools themselves (decK, docker-compose) and against each other: what
Kong forwards to is a host that serves it, what a host serves is reachable through Kong, and
every name, port, token and start-up order in one file is what the others expect.

Run from the repository root: target/tools/venv/bin/python -m unittest discover -s deploy/tests -v
"""

import shutil
import subprocess
import tomllib
import unittest
from urllib.parse import urlsplit

import image_build
import stack
from stack import ROOT

# Kong Gateway OSS 3.9's plugin schemas (kong/plugins/<name>/schema.lua and
# kong/observability/tracing/propagation/schema.lua at tag 3.9.1): the fields each plugin's
# config has, without the ones deprecated for removal in 4.0. decK 1.4 checks the entities'
# shape but not plugin configs, so a misspelt field would otherwise surface only when Kong starts.
KONG_IMAGE_SERIES = "kong:3.9."
KONG_PLUGIN_FIELDS = {
    "cors": {"origins", "headers", "exposed_headers", "methods", "max_age", "credentials",
             "private_network", "preflight_continue"},
    "correlation-id": {"header_name", "generator", "echo_downstream"},
    "rate-limiting": {"second", "minute", "hour", "day", "month", "year", "limit_by", "header_name",
                      "path", "policy", "fault_tolerant", "redis", "hide_client_headers", "error_code",
                      "error_message", "sync_rate"},
    "request-size-limiting": {"allowed_payload_size", "size_unit", "require_content_length"},
    "opentelemetry": {"traces_endpoint", "logs_endpoint", "headers", "resource_attributes", "queue",
                      "connect_timeout", "send_timeout", "read_timeout", "http_response_header_for_traceid",
                      "sampling_rate", "propagation"},
}
KONG_PROPAGATION_FIELDS = {"extract", "clear", "inject", "default_format"}
KONG_TRACE_FORMATS = {"w3c", "b3", "b3-single", "jaeger", "ot", "datadog", "aws", "gcp"}
KONG_SIZE_UNITS = {"bytes": 1, "kilobytes": 1024, "megabytes": 1024 * 1024}
RATE_PERIODS = ("second", "minute", "hour", "day", "month", "year")

INFRASTRUCTURE = {"postgres", "rabbitmq", "jaeger", "kong"}
OBSERVABILITY = {"prometheus", "grafana"}


def run(*command):
    """Runs a checker from the repository root; the test fails with its output if it fails."""
    if shutil.which(command[0]) is None:
        raise AssertionError(f"{command[0]} is not installed: run ensure_deploy_tools from scripts/ensure.sh")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def plugin_config(test, name):
    """The config of the global plugin `name`, which must be there and on."""
    plugins = stack.global_plugins()
    test.assertIn(name, plugins, f"no global {name} plugin")
    test.assertIsNot(plugins[name].get("enabled"), False, f"{name} is disabled")
    return plugins[name].get("config") or {}


class KongConfigTest(unittest.TestCase):
    def test_deck_validates_the_declarative_config(self):
        # decK 1.4 (Debian's) reads any _format_version; it checks the entities against its JSON
        # schema (unknown fields, types, required names) and their relations and duplicates.
        run("deck", "validate", "-s", "kong/kong.yml")

    def test_the_format_is_kong_3s(self):
        self.assertEqual(stack.kong().get("_format_version"), "3.0")

    def test_compose_runs_the_kong_whose_plugin_schemas_this_test_knows(self):
        self.assertTrue(stack.services()["kong"]["image"].startswith(KONG_IMAGE_SERIES),
                        "a new Kong image: check KONG_PLUGIN_FIELDS against its plugin schemas")

    def test_plugins_use_only_fields_of_kongs_schemas(self):
        for plugin in stack.kong().get("plugins") or []:
            with self.subTest(plugin=plugin["name"]):
                self.assertIn(plugin["name"], KONG_PLUGIN_FIELDS, "a plugin this test does not know")
                unknown = set(plugin.get("config") or {}) - KONG_PLUGIN_FIELDS[plugin["name"]]
                self.assertFalse(unknown, f"not a (current) field of {plugin['name']}'s config")

    def test_each_kong_service_forwards_to_a_host_that_serves_its_path_under_that_route(self):
        hosts = stack.host_services()
        self.assertTrue(stack.kong_services(), "kong.yml has no services")
        for name, service in stack.kong_services().items():
            with self.subTest(kong_service=name):
                host, port, path = stack.kong_service_target(service)
                self.assertIn(host, hosts, "not a compose service running the host image")
                config = stack.host_config(host)
                self.assertEqual(stack.port_of(config["http"]["listen"]), port, "not the port the host listens on")
                routes = [c["route"] for c in config["components"]]
                self.assertIn(path, routes, "the host runs no component with this route")
                self.assertIs(config["http"]["trust_forwarded_prefix"], True,
                              "behind Kong the host must pass X-Forwarded-Prefix on")
                self.assertTrue(service["routes"], "no route leads to this service")
                for route in service["routes"]:
                    # Kong strips the matched path and sends it as X-Forwarded-Prefix: it must be
                    # the component's route, which the service's path puts back.
                    self.assertIs(route.get("strip_path", True), True)
                    self.assertEqual(route.get("paths"), [path], "route path and service path differ")

    def test_every_component_of_every_host_is_reachable_through_kong(self):
        reachable = set()
        for service in stack.kong_services().values():
            host, port, path = stack.kong_service_target(service)
            for route in service["routes"]:
                if route.get("strip_path", True) is True and path in (route.get("paths") or []):
                    reachable.add((host, port, path))
        for host in stack.host_services():
            config = stack.host_config(host)
            for component in config["components"]:
                with self.subTest(host=host, component=component["name"]):
                    self.assertIn((host, stack.port_of(config["http"]["listen"]), component["route"]), reachable)

    def test_rate_limiting_counts_locally_with_a_positive_limit(self):
        config = plugin_config(self, "rate-limiting")
        self.assertEqual(config.get("policy"), "local")
        limits = {period: config[period] for period in RATE_PERIODS if period in config}
        self.assertTrue(limits, "no limit")
        for period, limit in limits.items():
            self.assertIsInstance(limit, (int, float), period)
            self.assertGreater(limit, 0, period)

    def test_request_size_limit_is_at_most_every_hosts_body_limit(self):
        config = plugin_config(self, "request-size-limiting")
        unit = config.get("size_unit", "megabytes")
        self.assertIn(unit, KONG_SIZE_UNITS)
        allowed = config.get("allowed_payload_size", 128) * KONG_SIZE_UNITS[unit]
        for host in stack.host_services():
            with self.subTest(host=host):
                self.assertLessEqual(allowed, stack.host_config(host)["http"]["max_body_bytes"])

    def test_traces_go_to_compose_jaeger_over_otlp_http_with_w3c_context(self):
        config = plugin_config(self, "opentelemetry")
        host, port, path = stack.url_parts(config.get("traces_endpoint", ""), 80)
        self.assertEqual((host, port, path), ("jaeger", 4318, "/v1/traces"))
        self.assertIn("jaeger", stack.services()["jaeger"]["image"])
        propagation = config.get("propagation") or {}
        self.assertLessEqual(set(propagation), KONG_PROPAGATION_FIELDS)
        self.assertEqual(propagation.get("default_format"), "w3c")
        self.assertIn("w3c", propagation.get("extract") or [])
        self.assertIn("w3c", propagation.get("inject") or [])
        for field in ("extract", "inject"):
            self.assertLessEqual(set(propagation.get(field) or []), KONG_TRACE_FORMATS | {"preserve"})
        # The plugin exports only what Kong's tracing instruments and samples.
        env = stack.environment("kong")
        self.assertNotIn(env.get("KONG_TRACING_INSTRUMENTATIONS", "off"), ("", "off"))
        self.assertGreater(float(env.get("KONG_TRACING_SAMPLING_RATE", "0")), 0)

    def test_cors_and_correlation_ids_are_on(self):
        plugin_config(self, "cors")
        correlation = plugin_config(self, "correlation-id")
        self.assertTrue(correlation.get("header_name"))
        self.assertIs(correlation.get("echo_downstream"), True)
        self.assertIn(correlation.get("generator", "uuid#counter"), {"uuid", "uuid#counter", "tracker"})

    def test_kong_runs_db_less_on_the_mounted_file(self):
        env = stack.environment("kong")
        self.assertEqual(env.get("KONG_DATABASE"), "off")
        mounts = {target: source for source, target, _ in stack.volumes("kong")}
        declarative = env.get("KONG_DECLARATIVE_CONFIG")
        self.assertIn(declarative, mounts, "KONG_DECLARATIVE_CONFIG is not a mounted file")
        self.assertEqual((ROOT / mounts[declarative]).resolve(), ROOT / "kong" / "kong.yml")


class ComposeTest(unittest.TestCase):
    def test_docker_compose_accepts_the_file(self):
        run("docker-compose", "-f", "compose.yaml", "config", "-q")
        run("docker-compose", "-f", "compose.yaml", "--profile", "observability", "config", "-q")

    def test_there_is_no_version_key(self):
        self.assertNotIn("version", stack.compose())

    def test_the_stacks_services_are_there(self):
        self.assertLessEqual(INFRASTRUCTURE | OBSERVABILITY, set(stack.services()))
        self.assertEqual(stack.host_services(), sorted(stack.manifest_components()),
                         "a host per manifest of deploy/manifests, and no other")

    def test_every_host_runs_the_one_image_built_from_the_dockerfile(self):
        builds = {name: s["build"] for name, s in stack.services().items() if "build" in s}
        self.assertEqual(len(builds), 1)
        (build,) = builds.values()
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        self.assertEqual((ROOT / context / dockerfile).resolve(), ROOT / "Dockerfile")

    def test_every_service_has_a_healthcheck(self):
        for name, service in stack.services().items():
            with self.subTest(service=name):
                check = service.get("healthcheck") or {}
                self.assertFalse(check.get("disable"))
                self.assertTrue(check.get("test"))
                self.assertNotEqual(check["test"], ["NONE"])

    def test_hosts_check_their_health_with_host_probe(self):
        for host in stack.host_services():
            with self.subTest(host=host):
                self.assertEqual(stack.services()[host]["healthcheck"]["test"], ["CMD", "/app/host", "probe"])

    def test_hosts_start_once_postgres_and_rabbitmq_are_healthy(self):
        for host in stack.host_services():
            with self.subTest(host=host):
                deps = stack.depends_on(host)
                self.assertEqual(deps.get("postgres"), "service_healthy")
                self.assertEqual(deps.get("rabbitmq"), "service_healthy")

    def test_kong_starts_once_every_host_is_healthy(self):
        deps = stack.depends_on("kong")
        for host in stack.host_services():
            self.assertEqual(deps.get(host), "service_healthy", host)

    def test_dependencies_name_services_of_the_file(self):
        for name in stack.services():
            with self.subTest(service=name):
                self.assertLessEqual(set(stack.depends_on(name)), set(stack.services()))

    def test_hosts_mount_the_built_components_read_only_where_the_manifest_reads_them(self):
        for host in stack.host_services():
            with self.subTest(host=host):
                mounts = {target: (source, ro) for source, target, ro in stack.volumes(host)}
                self.assertIn("/app/components", mounts)
                source, read_only = mounts["/app/components"]
                self.assertEqual(source, "./target/wasm32-wasip2/component", "the default COMPONENTS_DIR")
                raw = stack.read_yaml("compose.yaml")["services"][host]["volumes"]
                self.assertTrue(any("${COMPONENTS_DIR:-" in str(v) for v in raw), "COMPONENTS_DIR picks the folder")
                self.assertTrue(read_only)
                for component in stack.host_config(host)["components"]:
                    self.assertTrue(component["wasm"].startswith("/app/components/"), component["wasm"])

    def test_named_volumes_are_declared_and_hold_the_state(self):
        declared = set(stack.compose().get("volumes") or {})
        used = set()
        for name in stack.services():
            for source, _target, _ro in stack.volumes(name):
                if source is not None and not stack.is_bind(source):
                    used.add(source)
        self.assertEqual(used, declared, "every named volume used is declared, and the other way round")
        state = {"postgres": "/var/lib/postgresql/data", "rabbitmq": "/var/lib/rabbitmq"}
        for service, folder in state.items():
            with self.subTest(service=service):
                named = [s for s, t, _ in stack.volumes(service) if t == folder and not stack.is_bind(s)]
                self.assertTrue(named, f"{folder} is not on a named volume")

    def test_bind_mounts_name_files_of_the_repository(self):
        for name in stack.services():
            for source, target, _ro in stack.volumes(name):
                if stack.is_bind(source) and target != "/app/components":
                    with self.subTest(service=name, source=source):
                        self.assertTrue((ROOT / source).exists())

    def test_no_two_services_publish_the_same_port(self):
        seen = {}
        for name in stack.services():
            for address, port in stack.published_ports(name):
                self.assertNotIn(port, seen, f"{name} and {seen.get(port)} both publish {port}")
                seen[port] = name

    def test_observability_runs_only_in_its_profile(self):
        for name, service in stack.services().items():
            with self.subTest(service=name):
                expected = ["observability"] if name in OBSERVABILITY else None
                self.assertEqual(service.get("profiles"), expected)

    def test_prometheus_and_grafana_read_observability(self):
        prometheus = {t: s for s, t, _ in stack.volumes("prometheus")}
        self.assertEqual(prometheus.get("/etc/prometheus"), "./observability/prometheus")
        grafana = {t: s for s, t, _ in stack.volumes("grafana")}
        self.assertEqual(grafana.get("/etc/grafana/provisioning"), "./observability/grafana/provisioning")
        provider = stack.read_yaml("observability/grafana/provisioning/dashboards/dashboards.yml")
        folder = provider["providers"][0]["options"]["path"]
        self.assertEqual(grafana.get(folder), "./observability/grafana/dashboards")
        datasource = stack.read_yaml("observability/grafana/provisioning/datasources/prometheus.yml")
        host, port, _ = stack.url_parts(datasource["datasources"][0]["url"], 80)
        self.assertEqual((host, port), ("prometheus", 9090))


class HostContainerTest(unittest.TestCase):
    """The host containers' configuration: each manifest with its container's environment."""

    def test_each_host_listens_beyond_loopback_and_guards_its_admin_api(self):
        for host in stack.host_services():
            with self.subTest(host=host):
                config = stack.host_config(host)
                self.assertEqual(stack.host_of(config["http"]["listen"]), "0.0.0.0")
                self.assertEqual(stack.host_of(config["admin"]["listen"]), "0.0.0.0")
                self.assertGreaterEqual(len(stack.environment(host).get("HOST_ADMIN_TOKEN", "")), 16)
                self.assertIs(config["admin"].get("watch", True), True, "a rebuilt component is swapped in")

    def test_each_host_runs_one_component(self):
        for host in stack.host_services():
            with self.subTest(host=host):
                self.assertEqual([c["name"] for c in stack.host_config(host)["components"]], [host])

    def test_the_image_holds_every_path_a_manifest_names(self):
        for host in stack.host_services():
            for component in stack.host_config(host)["components"]:
                with self.subTest(host=host, component=component["name"]):
                    wasm = image_build.image_file(component["wasm"])
                    self.assertTrue(wasm is not None and wasm.is_file(), f"the image holds nothing at {component['wasm']}")
                    self.assertEqual(image_build.built_package(wasm), component["name"])
                    migrations = image_build.image_file(component["migrations"])
                    repository = ROOT / "components" / component["name"] / "migrations"
                    self.assertTrue(image_build.same_tree(migrations, repository),
                                    f"the image's {component['migrations']} is not the repository's {repository}")
                    self.assertTrue(any(migrations.glob("V*__*.sql")))

    def test_the_databases_are_compose_postgres_with_the_password_in_the_environment(self):
        for host in stack.host_services():
            for component in stack.host_config(host)["components"]:
                with self.subTest(host=host, component=component["name"]):
                    url = urlsplit(component["database_url"])
                    self.assertEqual((url.hostname, url.port or 5432), ("postgres", 5432))
                    self.assertTrue(url.password, "the password comes from <NAME>_DATABASE_URL")

    def test_messaging_is_compose_rabbitmq(self):
        for host in stack.host_services():
            for component in stack.host_config(host)["components"]:
                with self.subTest(host=host, component=component["name"]):
                    host_name, port, _ = stack.url_parts(component["amqp_url"], 5672)
                    self.assertEqual((host_name, port), ("rabbitmq", 5672))

    def test_the_manifests_as_written_name_compose_servers_and_no_database_password(self):
        for host in stack.host_services():
            with self.subTest(host=host):
                with open(stack.manifest_file(host), "rb") as file:
                    manifest = tomllib.load(file)
                broker = urlsplit(manifest["messaging"]["url"])
                self.assertEqual((broker.hostname, broker.port or 5672), ("rabbitmq", 5672))
                self.assertEqual([broker.username], [c["name"] for c in manifest["components"]],
                                 "the broker user is the component's name")
                self.assertIsNone(broker.password, "the password comes from <NAME>_AMQP_URL")
                for component in manifest["components"]:
                    url = urlsplit(component["database_url"])
                    self.assertEqual((url.hostname, url.port or 5432), ("postgres", 5432))
                    self.assertIsNone(url.password, "the password comes from <NAME>_DATABASE_URL")
                    self.assertNotIn("amqp_url", component, "the container's URL is messaging.url")

    def test_every_subscribed_topic_has_its_publisher_running_in_a_host(self):
        publishes = {}
        for host in stack.host_services():
            for component in stack.host_config(host)["components"]:
                for topic in component.get("publishes") or []:
                    self.assertNotIn(topic, publishes, f"{topic} has two publishers")
                    publishes[topic] = component["name"]
        for host in stack.host_services():
            config = stack.host_config(host)
            named = dict(config["messaging"].get("publishers") or {})
            for component in config["components"]:
                for topic in component.get("publishes") or []:
                    named.setdefault(topic, component["name"])
            for component in config["components"]:
                for topic in component.get("subscriptions") or []:
                    with self.subTest(host=host, topic=topic):
                        self.assertIn(topic, named, "the host would refuse a topic with no known publisher")
                        self.assertEqual(named[topic], publishes.get(topic), "not the component that publishes it")

    def test_traces_go_to_compose_jaeger(self):
        for host in stack.host_services():
            with self.subTest(host=host):
                endpoint = stack.environment(host).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
                self.assertEqual(stack.url_parts(endpoint, 80)[:2], ("jaeger", 4318))

    def test_prometheus_scrapes_every_host_on_its_admin_port_with_its_token(self):
        config = stack.read_yaml("observability/prometheus/prometheus.yml")
        targets = set()
        for job in config["scrape_configs"]:
            for group in job.get("static_configs") or []:
                targets.update(group["targets"])
        expected = {f"{h}:{stack.port_of(stack.host_config(h)['admin']['listen'])}" for h in stack.host_services()}
        self.assertEqual(targets, expected)
        (job,) = config["scrape_configs"]
        token_file = ROOT / "observability" / "prometheus" / job["authorization"]["credentials_file"]
        token = token_file.read_text(encoding="utf-8").strip()
        for host in stack.host_services():
            self.assertEqual(stack.environment(host).get("HOST_ADMIN_TOKEN"), token, host)

    def test_the_environment_overrides_are_read_as_the_host_reads_them(self):
        manifest = {"http": {"listen": "127.0.0.1:8000"}, "components": [{"name": "orders", "route": "/orders"}]}
        env = {"HOST_HTTP__LISTEN": "0.0.0.0:8080", "HOST_HTTP__TRUST_FORWARDED_PREFIX": "true",
               "HOST_COMPONENTS__ORDERS__ROUTE": "/o", "HOST_COMPONENTS__MY_THING__ROUTE": "/t",
               "ORDERS_DATABASE_URL": "postgres://o:p@db/orders", "HOST_ADMIN_TOKEN": "x" * 16}
        config = stack.apply_environment(manifest, env)
        self.assertEqual(config["http"]["listen"], "0.0.0.0:8080")
        self.assertIs(config["http"]["trust_forwarded_prefix"], True)
        self.assertEqual([(c["name"], c["route"]) for c in config["components"]], [("orders", "/o"), ("my-thing", "/t")])
        self.assertEqual(config["components"][0]["database_url"], "postgres://o:p@db/orders")
        self.assertEqual(stack.apply_environment(manifest, {"HOST_LISTEN": "0.0.0.0:1"})["http"]["listen"], "0.0.0.0:1")

    def test_a_components_broker_url_is_read_as_the_host_reads_it(self):
        manifest = {"messaging": {"url": "amqp://m@mq/%2f"},
                    "components": [{"name": "orders"}, {"name": "my-thing", "amqp_url": "amqp://c@mq/%2f"}]}

        def urls(env):
            return [c.get("amqp_url") for c in stack.apply_environment(manifest, env)["components"]]

        self.assertEqual(urls({}), ["amqp://m@mq/%2f", "amqp://c@mq/%2f"])
        self.assertEqual(urls({"AMQP_URL": "amqp://a@mq/%2f"}), ["amqp://a@mq/%2f", "amqp://a@mq/%2f"])
        self.assertEqual(urls({"AMQP_URL": "amqp://a@mq/%2f", "MY_THING_AMQP_URL": "amqp://t@mq/%2f"}),
                         ["amqp://a@mq/%2f", "amqp://t@mq/%2f"])
        self.assertEqual(urls({"HOST_MESSAGING__URL": "amqp://h@mq/%2f"}), ["amqp://h@mq/%2f", "amqp://c@mq/%2f"])


if __name__ == "__main__":
    unittest.main()
