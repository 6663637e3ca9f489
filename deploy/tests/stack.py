"""The container stack as files describe it, read once for the tests beside this file.

- `compose()`: compose.yaml, with `${VAR:-default}` filled in from the defaults (the tests run
  with no `.env`), and which of its services run the host image.
- `Image`: what the Dockerfile's final stage puts where, so a path in a container (a manifest,
  a `.wasm`, a migrations folder) can be traced back to the file in this repository that the
  image holds there.
- `host_config(service)`: a host container's configuration as the host would load it: the
  manifest HOST_CONFIG names, with the container's environment over it (`HOST_<SECTION>__<KEY>`,
  `HOST_COMPONENTS__<NAME>__<KEY>`, then the single names `HOST_LISTEN`, `HOST_ADMIN_LISTEN`,
  `AMQP_URL`, `<NAME>_DATABASE_URL`, `<NAME>_AMQP_URL`), and the host's defaults for what neither
  sets. Each component's `amqp_url` is the broker URL it logs in with.
- `broker_urls(service)`: every broker URL a host container's manifest or environment gives.
- `rabbitmq_definitions()`: the definitions file compose's RabbitMQ imports, found through the
  configuration file it mounts; `password_matches` checks a user's `password_hash` in it.
- `kong()`: kong/kong.yml.
- `manifest_components()`: the services, as the list deploy/manifests holds them (one container
  manifest `<name>.toml` each, running its one component `<name>`).

Run from the repository root: target/tools/venv/bin/python -m unittest discover -s deploy/tests -v
"""

import base64
import copy
import hashlib
import json
import os
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]

# The host's defaults (host/src/config) for the settings the tests read.
DEFAULT_HTTP_LISTEN = "127.0.0.1:8000"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:9000"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def read_yaml(relative):
    with open(ROOT / relative, encoding="utf-8") as file:
        return yaml.safe_load(file)


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value, env=None):
    """Compose's variable substitution, with `env` (empty by default) for the variables."""
    env = env or {}
    if isinstance(value, str):

        def substitute(match):
            if match.group(0) == "$$":
                return "$"
            name = match.group(1) or match.group(4)
            operator, default = match.group(2), match.group(3)
            present = env.get(name)
            if operator in (":-", "-"):
                unset = present is None or (operator == ":-" and present == "")
                return default if unset else present
            if operator in (":?", "?"):
                if present is None or (operator == ":?" and present == ""):
                    raise ValueError(f"{name} must be set: {default}")
                return present
            return present or ""

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


@cache
def compose():
    return interpolate(read_yaml("compose.yaml"))


def services():
    return compose()["services"]


def environment(service):
    """A service's environment as a dict, whichever of compose's two forms it is written in."""
    env = services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def host_image():
    """The image the one `build:` of the Dockerfile is tagged as."""
    built = [s for s in services().values() if "build" in s]
    assert len(built) == 1, f"expected one service that builds the host image, found {len(built)}"
    return built[0]["image"]


def host_services():
    return sorted(name for name, s in services().items() if s.get("image") == host_image())


def volumes(service):
    """A service's volumes as (source, target, read_only) triples, from either syntax."""
    result = []
    for volume in services()[service].get("volumes") or []:
        if isinstance(volume, dict):
            result.append((volume.get("source"), volume["target"], bool(volume.get("read_only"))))
            continue
        parts = volume.split(":")
        if len(parts) == 1:
            result.append((None, parts[0], False))
        else:
            mode = parts[2] if len(parts) > 2 else ""
            result.append((parts[0], parts[1], "ro" in mode.split(",")))
    return result


def is_bind(source):
    return source is not None and source.startswith((".", "/", "~"))


def depends_on(service):
    """{dependency: condition}, from either syntax."""
    deps = services()[service].get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published_ports(service):
    """Host ports a service publishes, as (address, port) pairs."""
    result = []
    for port in services()[service].get("ports") or []:
        if isinstance(port, dict):
            result.append((port.get("host_ip", "0.0.0.0"), int(port["published"])))
            continue
        parts = str(port).split(":")
        if len(parts) == 3:
            result.append((parts[0], int(parts[1])))
        elif len(parts) == 2:
            result.append(("0.0.0.0", int(parts[0])))
    return result


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def host_of(address):
    return address.rsplit(":", 1)[0].strip("[]")


def url_parts(url, default_port):
    parts = urlsplit(url)
    return parts.hostname, parts.port or default_port, parts.path


class Image:
    """The final stage of the Dockerfile: what it copies where, and how it runs."""

    def __init__(self, path=ROOT / "Dockerfile"):
        self.parser = DockerfileParser(str(path))
        self.instructions = [i for i in self.parser.structure if i["instruction"] != "COMMENT"]
        starts = [n for n, i in enumerate(self.instructions) if i["instruction"] == "FROM"]
        self.stages = [self.instructions[a:b] for a, b in zip(starts, starts[1:] + [len(self.instructions)])]
        self.final = self.stages[-1] if self.stages else []

    def stage_names(self):
        return [stage[0]["value"].split()[-1] for stage in self.stages if " AS " in stage[0]["value"].upper()]

    def base(self, stage):
        return stage[0]["value"].split()[0]

    def last(self, instruction, stage=None):
        found = [i["value"] for i in (stage or self.final) if i["instruction"] == instruction]
        return found[-1] if found else None

    def copies(self):
        """(from_stage or None, sources, destination) of each COPY/ADD of the final stage."""
        result = []
        for instruction in self.final:
            if instruction["instruction"] not in ("COPY", "ADD"):
                continue
            words = shlex.split(instruction["value"])
            flags = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words if w.startswith("--") and "=" in w}
            paths = [w for w in words if not w.startswith("--")]
            result.append((flags.get("--from"), paths[:-1], paths[-1]))
        return result

    def workdir(self):
        return self.last("WORKDIR") or "/"

    def source_of(self, container_path):
        """(from_stage, source path) that the image holds at `container_path`, or None."""
        container_path = os.path.normpath(os.path.join(self.workdir(), container_path))
        for stage, sources, destination in reversed(self.copies()):
            destination = os.path.join(self.workdir(), destination)
            as_folder = destination.endswith("/") or len(sources) > 1
            for source in sources:
                target = os.path.join(destination, os.path.basename(source)) if as_folder else destination
                target = os.path.normpath(target)
                if container_path == target:
                    return stage, source
                if container_path.startswith(target + "/"):
                    return stage, os.path.join(source, os.path.relpath(container_path, target))
        return None

    def repo_file(self, container_path):
        """The file of this repository that the image holds at `container_path`, or None when
        the image holds nothing there or builds it in an earlier stage."""
        found = self.source_of(container_path)
        if found is None or found[0] is not None:
            return None
        return ROOT / found[1]


def _scalar(text):
    """An environment value as the host reads it: a TOML scalar or list when it is one."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _component_key(name):
    return name.upper().replace("-", "_")


def apply_environment(manifest, env):
    """The manifest with the container's environment over it, as the host layers them."""
    config = copy.deepcopy(manifest)
    components = config.setdefault("components", [])
    for name in sorted(env):
        if not name.startswith("HOST_") or "__" not in name:
            continue
        keys = [key.lower() for key in name[len("HOST_"):].split("__")]
        value = _scalar(env[name])
        if keys[0] == "components":
            assert len(keys) == 3, f"{name}: expected HOST_COMPONENTS__<NAME>__<SETTING>"
            matching = [c for c in components if _component_key(c["name"]) == keys[1].upper()]
            if not matching:
                components.append({"name": keys[1].replace("_", "-")})
                matching = components[-1:]
            matching[0][keys[2]] = value
        else:
            section = config
            for key in keys[:-1]:
                section = section.setdefault(key, {})
            section[keys[-1]] = value
    if "HOST_LISTEN" in env:
        config.setdefault("http", {})["listen"] = env["HOST_LISTEN"]
    if "HOST_ADMIN_LISTEN" in env:
        config.setdefault("admin", {})["listen"] = env["HOST_ADMIN_LISTEN"]
    if "AMQP_URL" in env:
        config.setdefault("messaging", {})["url"] = env["AMQP_URL"]
    for component in components:
        url = env.get(f"{_component_key(component['name'])}_DATABASE_URL")
        if url:
            component["database_url"] = url
    # A component's broker URL: <NAME>_AMQP_URL, then AMQP_URL, then the manifest's (the
    # component's own `amqp_url`, then `messaging.url`).
    for component in components:
        url = (env.get(f"{_component_key(component['name'])}_AMQP_URL") or env.get("AMQP_URL")
               or component.get("amqp_url") or config.get("messaging", {}).get("url"))
        if url:
            component["amqp_url"] = url
    http = config.setdefault("http", {})
    http.setdefault("listen", DEFAULT_HTTP_LISTEN)
    http.setdefault("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    http.setdefault("trust_forwarded_prefix", False)
    config.setdefault("admin", {}).setdefault("listen", DEFAULT_ADMIN_LISTEN)
    return config


@cache
def image():
    return Image()


def manifest_file(service):
    """The repository file the image holds at the service's HOST_CONFIG."""
    path = environment(service).get("HOST_CONFIG")
    assert path, f"compose service {service} names no manifest (HOST_CONFIG)"
    file = image().repo_file(path)
    assert file is not None and file.is_file(), f"{service}: the image holds no manifest at HOST_CONFIG={path}"
    return file


def host_config(service):
    with open(manifest_file(service), "rb") as file:
        manifest = tomllib.load(file)
    return apply_environment(manifest, environment(service))


def broker_urls(service):
    """(where, URL) of every broker URL the container's manifest and environment give, whichever
    the host ends up using."""
    with open(manifest_file(service), "rb") as file:
        manifest = tomllib.load(file)
    found = []
    if "url" in (manifest.get("messaging") or {}):
        found.append(("[messaging] url", manifest["messaging"]["url"]))
    for component in manifest.get("components") or []:
        if "amqp_url" in component:
            found.append((f"{component['name']}'s amqp_url", component["amqp_url"]))
    for name, value in sorted(environment(service).items()):
        if name in ("AMQP_URL", "HOST_MESSAGING__URL") or name.endswith("_AMQP_URL"):
            found.append((name, value))
    return found


# RabbitMQ reads its main configuration file, then those of conf.d (the image's own settings).
RABBITMQ_CONFIG_FILES = ("/etc/rabbitmq/rabbitmq.conf", "/etc/rabbitmq/conf.d/")


def mounted_file(service, container_path):
    """The repository file a service's bind mount puts at `container_path`, or None."""
    for source, target, _ro in volumes(service):
        if is_bind(source) and os.path.normpath(target) == os.path.normpath(container_path):
            return (ROOT / source).resolve()
    return None


def rabbitmq_config():
    """{key: value} of the configuration files compose mounts into RabbitMQ, in reading order."""
    settings = {}
    mounts = sorted(t for s, t, _ in volumes("rabbitmq") if is_bind(s) and t.endswith(".conf"))
    for target in [t for t in mounts if t == RABBITMQ_CONFIG_FILES[0]] + \
            [t for t in mounts if t.startswith(RABBITMQ_CONFIG_FILES[1])]:
        for line in mounted_file("rabbitmq", target).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                key, _, value = line.partition("=")
                settings[key.strip()] = value.strip()
    return settings


def rabbitmq_definitions_file():
    """The repository file RabbitMQ imports at start, or None."""
    config = rabbitmq_config()
    path = config.get("load_definitions") or config.get("definitions.local.path")
    return mounted_file("rabbitmq", path) if path else None


@cache
def rabbitmq_definitions():
    with open(rabbitmq_definitions_file(), encoding="utf-8") as file:
        return json.load(file)


def password_hash(password, salt):
    """RabbitMQ's rabbit_password_hashing_sha256: base64 of a 4-byte salt followed by
    SHA-256(salt + the UTF-8 password)."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode()


def password_matches(user, password):
    """Whether a definitions file's user logs in with `password`."""
    assert user.get("hashing_algorithm") == "rabbit_password_hashing_sha256", user.get("hashing_algorithm")
    salt = base64.b64decode(user["password_hash"], validate=True)[:4]
    return password_hash(password, salt) == user["password_hash"]


@cache
def kong():
    return read_yaml("kong/kong.yml")


def kong_services():
    """Kong's services, each with its routes (nested or top-level) under `routes`."""
    config = kong()
    result = {s["name"]: dict(s, routes=list(s.get("routes") or [])) for s in config.get("services") or []}
    for route in config.get("routes") or []:
        service = route.get("service")
        name = service.get("name") if isinstance(service, dict) else service
        result[name]["routes"].append(route)
    return result


def kong_service_target(service):
    """(host, port, path) that a Kong service forwards to."""
    if "url" in service:
        host, port, path = url_parts(service["url"], 80)
        return host, port, path or "/"
    return service["host"], int(service.get("port", 80)), service.get("path") or "/"


def global_plugins():
    """Kong's global plugins (on no service, route or consumer), by name."""
    result = {}
    for plugin in kong().get("plugins") or []:
        if any(key in plugin for key in ("service", "route", "consumer")):
            continue
        assert plugin["name"] not in result, f"plugin {plugin['name']} is configured twice"
        result[plugin["name"]] = plugin
    return result


def manifest_components():
    """{service: its component}, from deploy/manifests: one manifest per service, named after
    the one component it runs."""
    result = {}
    for path in sorted((ROOT / "deploy" / "manifests").glob("*.toml")):
        with open(path, "rb") as file:
            components = tomllib.load(file).get("components") or []
        assert [c.get("name") for c in components] == [path.stem], f"{path.name}: one component, named {path.stem}"
        result[path.stem] = components[0]
    return result
