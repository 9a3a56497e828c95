"""The container deployment, proven without Docker.

No Docker engine runs where the suite runs, so the deployment files must be right by
construction. The static tests parse Dockerfile, .dockerignore, docker-compose.yml,
.env.example and deploy/ and check them against what they name: services, files,
volumes, variables, gridwatch's settings and CLI, ports and host names.

The rehearsal (integration) runs the compose services' own commands and health checks,
with their compose environment, against real servers: a mosquitto started from
deploy/mosquitto/mosquitto.conf, an influxd with authentication and the accounts the
influxdb image creates, and PostgreSQL. Only host names and ports are translated.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import sqlalchemy
import typer.main
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from psycopg import sql as pgsql
from sqlalchemy import make_url

from broker.address import BrokerAddress
from broker.connection import make_client
from gridwatch import cli
from gridwatch.local import MAKE_RUN_SCENARIO
from gridwatch.settings import Settings
from influx.client import InfluxClient, InfluxRejected, quote_ident, quote_literal
from registry.db import migrate
from stack.servers import Influxd, Mosquitto, Postgres, find_binary, free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
DEPLOY_README = ROOT / "deploy" / "README.md"
DEPLOY_MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
STACK_MOSQUITTO_CONF = ROOT / "stack" / "conf" / "mosquitto.conf"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
GRAFANA_DATASOURCE = GRAFANA_PROVISIONING / "datasources" / "influxdb.yaml"
GRAFANA_PROVIDER = GRAFANA_PROVISIONING / "dashboards" / "gridwatch.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

SECRET = re.compile(r"PASSWORD|TOKEN|SECRET")
GW_NAME = re.compile(r"\bGW_[A-Z0-9_]+\b")
# What a broker restart or a backlog depends on: the same in containers as locally.
DURABILITY_KEYS = (
    "persistence",
    "autosave_interval",
    "persistent_client_expiration",
    "max_inflight_messages",
    "max_queued_messages",
    "max_queued_bytes",
)


# --- compose's variable interpolation ----------------------------------------------


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset or empty: compose refuses to run."""


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def variables_in(text: str) -> list[tuple[str, str | None]]:
    """Each ``(name, operator)`` interpolated in ``text``; ``$$`` is a literal ``$``."""
    return [
        (m["braced"] or m["named"], m["op"])
        for m in _INTERPOLATION.finditer(text)
        if not m["escaped"]
    ]


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` as compose substitutes it from ``env`` (the .env file)."""

    def substitute(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["braced"] or m["named"], m["op"], m["arg"] or ""
        value = env.get(name)
        if op == ":-":
            return value or arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return "" if value is None else arg
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def strings_in(node: Any) -> Iterator[str]:
    """Every string value of a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    """The YAML tree with every string value interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env) for value in node]
    return node


# --- the files, parsed --------------------------------------------------------------


def raw_compose() -> dict[str, Any]:
    """docker-compose.yml as written (anchors and merge keys resolved by PyYAML)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def env_example() -> dict[str, str]:
    """The assignments of .env.example."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not an assignment: {line!r}"
            values[name.strip()] = value.strip()
    return values


def operator_env() -> dict[str, str]:
    """.env.example with every secret set, as an operator's .env would be."""
    # As .env.example and deploy/README.md make them: `openssl rand -hex 24`.
    return {
        name: secrets.token_hex(24) if SECRET.search(name) else value
        for name, value in env_example().items()
    }


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose sees it with ``env`` (default: :func:`operator_env`)."""
    result = interpolated(raw_compose(), operator_env() if env is None else env)
    assert isinstance(result, dict)
    return result


def services(data: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The services of ``data`` (a parsed compose file; default: :func:`compose`)."""
    result = (compose() if data is None else data)["services"]
    assert isinstance(result, dict)
    return result


def is_gridwatch(service: Mapping[str, Any]) -> bool:
    """A service running the gridwatch image."""
    return "build" in service or str(service.get("image", "")).startswith("gridwatch:")


def gridwatch_services(
    among: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The services running the gridwatch image, ``among`` some (default: :func:`services`)."""
    return {name: s for name, s in (among or services()).items() if is_gridwatch(s)}


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, in either of compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A service's dependencies with their conditions, in either form."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: dict(value or {}) for name, value in deps.items()}


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def healthcheck_argv(service: Mapping[str, Any]) -> list[str]:
    """The health check as the argv docker runs."""
    test = as_argv(service["healthcheck"]["test"])
    if test[0] == "CMD":
        return test[1:]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    return ["/bin/sh", "-c", " ".join(test)]


def volumes_of(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """A service's mounts as ``(type, source, target)``: ``bind`` or ``volume``."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume["type"], volume.get("source", ""), volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        target = rest.split(":")[0]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append((kind, source, target))
    return mounts


def published(service: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """A service's short-syntax port mappings as ``(host_ip, host_port, container_port)``."""
    mappings = []
    for port in service.get("ports", []):
        parts = str(port).split(":")
        assert len(parts) == 3, f"publish on an explicit host address: {port!r}"
        mappings.append((parts[0], int(parts[1]), int(parts[2].split("/")[0])))
    return mappings


def mosquitto_conf(path: Path) -> dict[str, list[str]]:
    """A mosquitto config's options: each key with its values, in order."""
    options: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.strip().partition(" ")
            options.setdefault(key, []).append(value.strip())
    return options


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as ``(INSTRUCTION, arguments)``, continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def cli_command(path: list[str]) -> tuple[Any, list[str]]:
    """The (click) command that ``gridwatch *path`` reaches, and the arguments left.

    A sub-group is a command of its own when it runs without a subcommand
    (``gridwatch alerts`` runs the service). Duck-typed: typer ships click's classes
    under its own package.
    """
    command: Any = typer.main.get_command(cli.app)
    args = list(path)
    while hasattr(command, "commands"):
        if command.invoke_without_command and not (args and args[0] in command.commands):
            break
        assert args, f"`gridwatch {' '.join(path)}` names no subcommand"
        name = args.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`gridwatch {' '.join(path)}`: no subcommand {name!r}"
        command = sub
    return command, args


def check_invocation(argv: list[str]) -> dict[str, Any]:
    """Parse ``gridwatch *argv`` as the CLI does, without running it: the parameters.

    A wrong subcommand, option, value (a float must be a float) or missing file fails.
    """
    command, args = cli_command(argv)
    try:
        with command.make_context(command.name, args) as context:
            return dict(context.params)
    except Exception as exc:  # typer ships click's exceptions under its own package
        pytest.fail(f"`gridwatch {shlex.join(argv)}`: {exc}")


def shell_script(service: Mapping[str, Any]) -> str | None:
    """The script of a service whose entrypoint is ``sh -c``; None for the image's own."""
    entrypoint = as_argv(service.get("entrypoint"))
    if not entrypoint:
        return None
    assert Path(entrypoint[0]).name == "sh", f"unexpected entrypoint {entrypoint}"
    assert any(flag.startswith("-") and "c" in flag for flag in entrypoint[1:])
    command = as_argv(service.get("command"))
    assert len(command) == 1, "sh -c takes the script as one argument"
    return command[0]


def gridwatch_invocations(service: Mapping[str, Any]) -> list[list[str]]:
    """The argv (after ``gridwatch``) of every gridwatch command a service runs."""
    script = shell_script(service)
    if script is None:  # the image's ENTRYPOINT ["gridwatch"] with the command as argv
        return [as_argv(service.get("command"))]
    invocations = []
    for line in script.splitlines():
        tokens = [substituted(token) for token in shlex.split(line, comments=True)]
        if tokens[:1] == ["exec"]:
            tokens = tokens[1:]
        if tokens[:1] == ["gridwatch"]:
            invocations.append(tokens[1:])
    return invocations


def substituted(token: str) -> str:
    """A shell word with its leading ``$(python -c '...')`` run, as the shell would."""
    match = re.fullmatch(r"\$\(python -c '([^']*)'\)([^$]*)", token)
    if match is None:
        assert "$(" not in token, f"a command substitution this test cannot run: {token}"
        return token
    done = subprocess.run(
        [sys.executable, "-c", match[1]], capture_output=True, text=True, check=True
    )
    return done.stdout.strip() + match[2]


def python_snippets(script: str) -> list[str]:
    """The code of every ``python -c '...'`` of a shell script."""
    return re.findall(r"python -c '([^']*)'", script)


# --- .dockerignore, with Docker's matching rules ------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """The patterns of .dockerignore as ``(excludes, regex)``, in order."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            rules.append((not negated, _pattern_regex(pattern)))
    return rules


def ignored(path: str) -> bool:
    """True if the build context leaves out ``path``: the last pattern matching it or a
    parent directory decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for excludes, regex in dockerignore():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = excludes
    return verdict


# --- static tests: docker-compose.yml -----------------------------------------------


def test_no_version_key_and_a_project_name() -> None:
    data = raw_compose()
    assert "version" not in data, "the Compose spec has no version key"
    assert data.get("name") == "gridwatch"
    unknown = set(data) - {"name", "services", "volumes", "networks", "configs", "secrets"}
    assert all(key.startswith("x-") for key in unknown), unknown


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in services().items():
        assert service.get("image") or service.get("build"), name


def test_gridwatch_services_share_one_image_built_from_the_dockerfile() -> None:
    gridwatch = gridwatch_services()
    assert set(gridwatch) == {"init", "ingest", "alerts", "imagery", "api", "simulate"}
    assert {s["image"] for s in gridwatch.values()} == {"gridwatch:latest"}
    assert {str(s["build"]) for s in gridwatch.values()} == {"."}
    raw = gridwatch_services(services(raw_compose()))
    assert {s["image"] for s in raw.values()} == {"gridwatch:${GRIDWATCH_VERSION:-latest}"}


def test_every_build_context_has_its_dockerfile() -> None:
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        context, dockerfile = (
            (build, "Dockerfile")
            if isinstance(build, str)
            else (build.get("context", "."), build.get("dockerfile", "Dockerfile"))
        )
        assert (ROOT / context / dockerfile).is_file(), f"{name}: no {context}/{dockerfile}"


def test_bind_mounted_host_files_exist_in_the_repository() -> None:
    binds = 0
    for name, service in services().items():
        for kind, source, _ in volumes_of(service):
            if kind == "bind":
                binds += 1
                path = (ROOT / source).resolve()
                assert path.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
                assert path.exists(), f"{name}: bind-mounted {source} does not exist"
    assert binds, "the broker's config is bind-mounted"


def test_named_volumes_are_declared_and_used() -> None:
    data = compose()
    declared = set(data.get("volumes") or {})
    used = {
        source
        for service in services(data).values()
        for kind, source, _ in volumes_of(service)
        if kind == "volume"
    }
    assert used <= declared, f"undeclared volumes: {used - declared}"
    assert declared <= used, f"declared but unused volumes: {declared - used}"


def test_every_variable_is_documented_in_env_example() -> None:
    used = {name for text in strings_in(raw_compose()) for name, _ in variables_in(text)}
    documented = env_example()
    assert used - set(documented) == set(), "used in docker-compose.yml, not in .env.example"
    assert set(documented) - used == set(), "in .env.example, used nowhere"
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        above = index - 1
        while above >= 0 and lines[above].strip() and not lines[above].startswith("#"):
            above -= 1  # variables sharing one comment
        assert above >= 0 and lines[above].startswith("# "), f"no comment explains {line!r}"


def test_every_variable_has_a_default_or_is_required() -> None:
    for text in strings_in(raw_compose()):
        for name, op in variables_in(text):
            assert op in (":-", ":?"), f"${{{name}}} would silently become empty when unset"


def test_no_secret_has_a_usable_default() -> None:
    secret_names = {name for name in env_example() if SECRET.search(name)}
    assert secret_names >= {
        "INFLUXDB_ADMIN_PASSWORD",
        "INFLUXDB_USER_PASSWORD",
        "POSTGRES_PASSWORD",
    }
    for text in strings_in(raw_compose()):
        for name, op in variables_in(text):
            if name in secret_names:
                assert op == ":?", f"{name} must be ${{{name}:?...}}, without a default"
    for name in secret_names:
        assert env_example()[name] == "", f".env.example must leave {name} empty"
        env = operator_env()
        del env[name]
        with pytest.raises(MissingVariable, match=name):
            compose(env)
    with pytest.raises(MissingVariable):
        compose(env_example())  # copied, not edited: compose refuses to start


def test_gw_variables_are_settings_fields() -> None:
    fields = set(Settings.model_fields)
    for name, service in gridwatch_services().items():
        for key in environment(service):
            if key.upper().startswith("GW_"):
                assert key[3:].lower() in fields, f"{name}: {key} is no gridwatch setting"
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            for name in GW_NAME.findall(arguments):
                assert name[3:].lower() in fields, f"Dockerfile: {name} is no gridwatch setting"
    for name in GW_NAME.findall(DEPLOY_README.read_text(encoding="utf-8")):
        assert name[3:].lower() in fields, f"deploy/README.md: {name} is no gridwatch setting"


def test_gridwatch_environments_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("GW_"):
            monkeypatch.delenv(key)
    for name, service in gridwatch_services().items():
        gw = {k: v for k, v in environment(service).items() if k.upper().startswith("GW_")}
        with monkeypatch.context() as patch:
            for key, value in gw.items():
                patch.setenv(key, value)
            settings = Settings()  # validates every value
        for key, value in gw.items():
            assert str(getattr(settings, key[3:].lower())) == value, f"{name}: {key}"


def test_commands_are_real_cli_subcommands() -> None:
    for name, service in gridwatch_services().items():
        invocations = gridwatch_invocations(service)
        assert invocations, f"{name} runs no gridwatch command"
        for argv in invocations:
            check_invocation(argv)


def test_init_runs_once_and_the_others_wait_for_it() -> None:
    data = services()
    assert gridwatch_invocations(data["init"]) == [["init"]]
    assert data["init"]["restart"] == "no", "a one-shot service must not be restarted"
    for name, service in gridwatch_services().items():
        if name != "init":
            deps = depends_on(service)
            assert deps["init"]["condition"] == "service_completed_successfully", name
            assert service["restart"] == "unless-stopped", name


def test_depends_on_targets_exist_and_health_conditions_have_healthchecks() -> None:
    data = services()
    for name, service in data.items():
        for target in depends_on(service):
            assert target in data, f"{name} depends on unknown service {target}"
            assert target != name
            if not data[target].get("profiles"):
                continue
            assert service.get("profiles"), f"{name} needs {target}, which is in a profile"
        for target, spec in depends_on(service).items():
            condition = spec.get("condition", "service_started")
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
            if condition == "service_healthy":
                check = data[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy: {target} needs a healthcheck"
                )


def test_long_running_services_have_healthchecks() -> None:
    for name, service in services().items():
        if service.get("restart") == "no" or name == "simulate":
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("logging", {}).get("options", {}).get("max-size"), name


def test_api_publishes_the_port_it_listens_on() -> None:
    api = services()["api"]
    env = environment(api)
    given = check_invocation(gridwatch_invocations(api)[0])
    host = given.get("host") or env.get("GW_API_HOST") or Settings.model_fields["api_host"].default
    port = int(
        given.get("port") or env.get("GW_API_PORT") or Settings.model_fields["api_port"].default
    )
    assert host == ".".join(["0"] * 4), "inside a container the API must listen on every address"
    assert [container for _, _, container in published(api)] == [port]
    assert published(api)[0][:2] == ("127.0.0.1", 8000)  # .env.example's defaults
    health = " ".join(healthcheck_argv(api))
    assert "/health" in health
    assert "GW_API_PORT" in health or str(port) in health


def test_mosquitto_listens_where_gridwatch_and_its_healthcheck_connect() -> None:
    data = services()
    broker = data["mosquitto"]
    listener = mosquitto_conf(DEPLOY_MOSQUITTO_CONF)["listener"]
    assert listener == ["1883"], "one listener, on every address of the container"
    mounts = {target: (kind, source) for kind, source, target in volumes_of(broker)}
    assert mounts["/mosquitto/config/mosquitto.conf"] == (
        "bind",
        "./deploy/mosquitto/mosquitto.conf",
    )
    persistence = mosquitto_conf(DEPLOY_MOSQUITTO_CONF)["persistence_location"][0]
    assert mounts[persistence.rstrip("/")][0] == "volume", "persistence on the named volume"
    # 8883: the TLS listener, open once the broker has its certificate (below).
    assert [container for _, _, container in published(broker)] == [1883, 8883]
    assert len({host for host, _, _ in published(broker)}) == 1, "both on MQTT_BIND_ADDRESS"
    assert "-p 1883" in " ".join(healthcheck_argv(broker))
    for name, service in gridwatch_services(data).items():
        url = urlsplit(environment(service)["GW_MQTT_URL"])
        assert (url.scheme, url.hostname, url.port) == ("mqtt", "mosquitto", 1883), name


def test_gridwatch_urls_name_the_services() -> None:
    data = services()
    influxdb, postgres = environment(data["influxdb"]), environment(data["postgres"])
    assert "INFLUXDB_HTTP_BIND_ADDRESS" not in influxdb, "the image's default :8086 is used"
    assert "8086" in " ".join(healthcheck_argv(data["influxdb"]))
    for name, service in gridwatch_services(data).items():
        env = environment(service)
        influx = urlsplit(env["GW_INFLUX_URL"])
        assert (influx.scheme, influx.hostname, influx.port) == ("http", "influxdb", 8086), name
        assert env["GW_INFLUX_DB"] == influxdb["INFLUXDB_DB"], name
        sql = make_url(env["GW_DATABASE_URL"])
        assert (sql.drivername, sql.host, sql.port) == ("postgresql+psycopg", "postgres", 5432)
        assert (sql.username, sql.database) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        assert sql.password is None, "the password comes from PGPASSWORD, not the URL"
        assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"], name


def test_only_init_uses_the_influxdb_admin_account() -> None:
    data = services()
    influxdb = environment(data["influxdb"])
    assert influxdb["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    for name, service in gridwatch_services(data).items():
        env = environment(service)
        user, password = (
            ("INFLUXDB_ADMIN_USER", "INFLUXDB_ADMIN_PASSWORD")
            if name == "init"
            else ("INFLUXDB_USER", "INFLUXDB_USER_PASSWORD")
        )
        assert env["GW_INFLUX_USER"] == influxdb[user], name
        assert env["GW_INFLUX_PASSWORD"] == influxdb[password], name
    assert "GW_INFLUX_RETENTION" in environment(data["init"])


def test_simulate_imports_the_shipped_demo_community_and_simulates_it() -> None:
    simulate = services()["simulate"]
    assert simulate["profiles"] == ["simulate"]
    for consumer in ("ingest", "alerts", "imagery"):  # subscribed before the replay
        assert depends_on(simulate)[consumer]["condition"] == "service_healthy", consumer
    script = shell_script(simulate)
    assert script is not None
    assert script.strip().splitlines()[-1].startswith("exec gridwatch simulate "), (
        "exec: so that SIGTERM reaches gridwatch, not the shell"
    )
    (locate, wait, scenario) = python_snippets(script)
    found = subprocess.run(
        [sys.executable, "-c", locate], capture_output=True, text=True, check=True
    )
    demo_file = Path(found.stdout.strip())
    assert demo_file.is_file()
    assert "*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["*"], "installed with it"
    compile(wait, "<simulate>", "exec")
    assert "registry_refresh_s" in wait, "waits until ingest has reloaded the registry"
    community = yaml.safe_load(demo_file.read_text(encoding="utf-8"))["community"]["id"]
    invocations = gridwatch_invocations(simulate)
    assert [argv[:3] for argv in invocations[:2]] == [
        ["registry", "import", str(demo_file)],
        ["broker", "credentials", "issue"],
    ]
    assert [argv[0] for argv in invocations] == ["registry", "broker", "simulate"]
    assert check_invocation(invocations[0])["file"] == demo_file
    # Each device logs in with the password issued to it just before.
    issued = check_invocation(invocations[1])
    assert issued["community"] == [community]
    simulate_argv = invocations[2]
    credentials = simulate_argv[simulate_argv.index("--credentials") + 1]
    assert credentials == str(issued["out"])
    simulation = check_invocation(simulate_argv)
    assert simulation["community"] == [community]
    assert simulation["scenario"] == MAKE_RUN_SCENARIO, "make run's faults: alerts to see"
    assert "SCENARIOS_DIR" in scenario


def test_snapshots_are_written_by_imagery_and_read_only_to_the_api() -> None:
    data = services()
    mounts = {
        name: {target: (kind, source) for kind, source, target in volumes_of(service)}
        for name, service in data.items()
    }
    directory = environment(data["imagery"])["GW_IMAGERY_DIR"]
    assert mounts["imagery"][directory] == ("volume", "imagery-data")
    assert mounts["api"][directory] == ("volume", "imagery-data")
    assert f"imagery-data:{directory}:ro" in data["api"]["volumes"]
    assert f"imagery-data:{directory}" in data["imagery"]["volumes"], "imagery writes"
    for name, service in gridwatch_services(data).items():
        assert environment(service)["GW_IMAGERY_DIR"] == directory, name
    # A new named volume takes the ownership of the image's directory at its mount point.
    final = dockerfile_instructions()
    final = final[max(i for i, (k, _) in enumerate(final) if k == "FROM") :]
    user = [a for k, a in final if k == "USER"][-1].split(":")[0]
    made = [a for k, a in final if k == "RUN" and "install -d -o gridwatch" in a]
    assert made and directory in made[0], "the image makes the snapshot directory"
    assert "--uid " + user in made[0], "owned by the user the services run as"


def test_metrics_health_checks_read_the_port_their_service_serves() -> None:
    data = services()
    for name in ("ingest", "imagery", "alerts"):
        env = environment(data[name])
        [setting] = [key for key in env if re.fullmatch(r"GW_\w+_METRICS_PORT", key)]
        assert setting == f"GW_{name.upper()}_METRICS_PORT", "the service's own endpoint"
        assert int(env[setting]) > 0, f"{name}: metrics on, for the health check"
        host = Settings.model_fields[f"{name}_metrics_host"].default
        assert host == "127.0.0.1", "the check asks the container's loopback"
        assert data[name]["healthcheck"] == data["ingest"]["healthcheck"], "the shared check"
        check = " ".join(healthcheck_argv(data[name]))
        assert "GW_\\w+_METRICS_PORT" in check and "(broker|sql)_up" in check, name
        module = importlib.import_module(f"{name}.metrics")
        assert f"gridwatch_{name}_broker_up" in Path(str(module.__file__)).read_text()
    # alerts also needs SQL: alerts it cannot store are lost (its rehearsal proves it).
    alerts_metrics = importlib.import_module("alerts.metrics")
    assert "gridwatch_alerts_sql_up" in Path(str(alerts_metrics.__file__)).read_text()


def test_ingest_starts_in_a_share_group_so_replicas_can_join() -> None:
    env = environment(services()["ingest"])
    assert env["GW_INGEST_SHARE_GROUP"], "a shared subscription from the first start"
    assert env["GW_INGEST_CLIENT_ID"] == Settings.model_fields["ingest_client_id"].default


# --- static tests: Grafana ----------------------------------------------------------


def grafana_datasource(env: Mapping[str, str]) -> dict[str, Any]:
    """The provisioned InfluxDB data source as Grafana reads it, ``${VAR}`` from ``env``."""
    text = re.sub(
        r"\$\{(\w+)\}", lambda m: env[m[1]], GRAFANA_DATASOURCE.read_text(encoding="utf-8")
    )
    [datasource] = yaml.safe_load(text)["datasources"]
    assert isinstance(datasource, dict)
    return datasource


def test_grafana_is_pinned_provisioned_read_only_and_checked() -> None:
    grafana = services()["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"]), "pin a release"
    assert grafana["restart"] == "unless-stopped"
    mounts = {target: (kind, source) for kind, source, target in volumes_of(grafana)}
    assert mounts["/etc/grafana/provisioning"] == ("bind", "./deploy/grafana/provisioning")
    provider = yaml.safe_load(GRAFANA_PROVIDER.read_text(encoding="utf-8"))["providers"][0]
    assert mounts[provider["options"]["path"]] == ("bind", "./dashboards/generated")
    assert mounts["/var/lib/grafana"][0] == "volume", "users, sessions, stars survive"
    read_only = [v for v in grafana["volumes"] if v.startswith("./")]
    assert read_only and all(v.endswith(":ro") for v in read_only)
    env = environment(grafana)
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (ROOT / "dashboards" / "generated" / Path(home).name).is_file()
    assert env["GF_USERS_ALLOW_SIGN_UP"] == env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert published(grafana) == [("127.0.0.1", 3000, 3000)]
    health = " ".join(healthcheck_argv(grafana))
    assert "http://127.0.0.1:3000/api/health" in health
    assert depends_on(grafana)["influxdb"]["condition"] == "service_healthy"


# The dashboard schemaVersion the SDK writes -> the first Grafana release that knows
# it as its own. 42 came with grafana/grafana#110517 (merged September 2025), in 12.3
# for certain. A new SDK writing another version fails the test below until the pin
# is checked against it.
GRAFANA_FOR_SCHEMA = {42: (12, 3)}


def test_grafana_image_knows_the_dashboards_schema_and_influxdb_speaks_1x() -> None:
    data = services()
    emitted = {
        json.loads(path.read_text(encoding="utf-8"))["schemaVersion"]
        for path in (ROOT / "dashboards" / "generated").glob("*.json")
    }
    [schema] = emitted
    assert schema in GRAFANA_FOR_SCHEMA, f"which Grafana knows schemaVersion {schema}?"
    version = re.fullmatch(r"grafana/grafana:(\d+)\.(\d+)\.\d+", data["grafana"]["image"])
    assert version, "pin a Grafana release"
    assert (int(version[1]), int(version[2])) >= GRAFANA_FOR_SCHEMA[schema]
    pinned = re.fullmatch(r"influxdb:(\d+)\.\d+\.\d+", data["influxdb"]["image"])
    assert pinned, "pin an InfluxDB release"
    tested = subprocess.run(
        [find_binary("influxd", "influxdb"), "version"], capture_output=True, text=True, check=True
    ).stdout
    assert pinned[1] == "1" and tested.startswith("InfluxDB v1."), (
        "the image must speak the 1.x HTTP API the tests run against"
    )


def test_grafana_reads_the_database_ingest_writes_with_the_read_only_account() -> None:
    data = services()
    influxdb = environment(data["influxdb"])
    datasource = grafana_datasource(environment(data["grafana"]))
    assert datasource["type"] == "influxdb" and datasource["jsonData"]["version"] == "InfluxQL"
    ingest = environment(data["ingest"])
    assert datasource["url"] == ingest["GW_INFLUX_URL"]
    assert datasource["jsonData"]["dbName"] == ingest["GW_INFLUX_DB"] == influxdb["INFLUXDB_DB"]
    assert datasource["user"] == influxdb["INFLUXDB_READ_USER"] != ingest["GW_INFLUX_USER"]
    assert datasource["secureJsonData"]["password"] == influxdb["INFLUXDB_READ_USER_PASSWORD"]
    from dashboards.widgets import DATASOURCE_UID

    assert datasource["uid"] == DATASOURCE_UID, "the dashboards refer to this uid"


# --- static tests: the broker's config ----------------------------------------------


def test_deploy_broker_keeps_the_local_brokers_durability_settings() -> None:
    deploy, stack = mosquitto_conf(DEPLOY_MOSQUITTO_CONF), mosquitto_conf(STACK_MOSQUITTO_CONF)
    for key in DURABILITY_KEYS:
        assert key in stack, f"stack/conf/mosquitto.conf no longer sets {key}: update this test"
        assert deploy.get(key) == stack[key], f"{key}: deploy {deploy.get(key)} vs {stack[key]}"
    assert deploy["persistence"] == ["true"]
    # The reasoning behind the queue sizes travels with them.
    stack_lines = STACK_MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines()
    start = stack_lines.index("max_inflight_messages " + stack["max_inflight_messages"][0])
    comment = []
    for line in reversed(stack_lines[:start]):
        if not line.startswith("#"):
            break
        comment.append(line)
    assert len(comment) > 3
    deploy_lines = set(DEPLOY_MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines())
    missing = [line for line in comment if line not in deploy_lines]
    assert not missing, f"the backlog comment changed in stack/conf: {missing}"


def test_deploy_broker_admits_only_the_accounts_gridwatch_writes() -> None:
    conf = mosquitto_conf(DEPLOY_MOSQUITTO_CONF)
    assert conf["allow_anonymous"] == ["false"]
    assert conf["log_dest"] == ["stdout"]
    # run.sh copies gridwatch's files from the shared volume to where the broker reads.
    run_sh = (ROOT / "deploy" / "mosquitto" / "run.sh").read_text(encoding="utf-8")
    assert conf["password_file"] == ["/mosquitto/run/passwords"]
    assert conf["acl_file"] == ["/mosquitto/run/acl"]
    assert "dst=${GW_BROKER_AUTH_LIVE:-/mosquitto/run}" in run_sh
    data = services()
    broker = data["mosquitto"]
    assert as_argv(broker["command"]) == ["/bin/sh", "/mosquitto/gridwatch/run.sh"]
    mounts = {target: (kind, source) for kind, source, target in volumes_of(broker)}
    assert mounts["/mosquitto/gridwatch/run.sh"] == ("bind", "./deploy/mosquitto/run.sh")
    assert mounts["/mosquitto/auth"] == ("volume", "mosquitto-auth")
    assert "src=${GW_BROKER_AUTH_SOURCE:-/mosquitto/auth}" in run_sh
    # The writers mount it where gridwatch writes the files by default (the image's
    # GW_STATE_DIR), a directory the image makes for its user.
    auth = Settings(state_dir=Path("/var/lib/gridwatch")).broker_auth_path
    assert "GW_STATE_DIR=/var/lib/gridwatch" in DOCKERFILE.read_text(encoding="utf-8")
    assert any(
        i[0] == "RUN" and "install -d" in i[1] and str(auth) in i[1]
        for i in dockerfile_instructions()
    )
    writers = {"init", "api", "simulate"}
    for name, service in gridwatch_services(data).items():
        env = environment(service)
        targets = {target: source for _, source, target in volumes_of(service)}
        assert (targets.get(str(auth)) == "mosquitto-auth") == (name in writers), name
        # Each service that connects logs in with its own account.
        url = urlsplit(env["GW_MQTT_URL"])
        if name in {"ingest", "alerts", "api", "imagery"}:
            assert (url.username, url.password) == (
                f"gridwatch.{name}",
                env_of_init_password(data, name),
            ), name
        else:
            assert url.username is None, f"{name} logs in as no service"


def test_deploy_broker_opens_a_tls_listener_with_the_mounted_certificate() -> None:
    """run.sh writes the 8883 listener into the directory mosquitto.conf includes, with
    the files of the directory compose mounts, under the same accounts and ACL."""
    conf = mosquitto_conf(DEPLOY_MOSQUITTO_CONF)
    run_sh = (ROOT / "deploy" / "mosquitto" / "run.sh").read_text(encoding="utf-8")
    assert conf["include_dir"] == ["/mosquitto/run/conf.d"]
    assert "conf_d=$dst/conf.d" in run_sh
    # The listener's options must follow its `listener` line: nothing after the include.
    last = DEPLOY_MOSQUITTO_CONF.read_text(encoding="utf-8").strip().splitlines()[-1]
    assert last == "include_dir /mosquitto/run/conf.d"
    # Global, so the TLS listener has them too.
    assert conf.get("per_listener_settings", ["false"]) == ["false"]
    assert conf["allow_anonymous"] == ["false"]
    assert "tls_listener=${GW_BROKER_TLS_LISTENER:-8883}" in run_sh
    assert "tls_src=${GW_BROKER_TLS_SOURCE:-/mosquitto/tls}" in run_sh
    mounts = {
        target: (kind, source) for kind, source, target in volumes_of(services()["mosquitto"])
    }
    kind, source = mounts["/mosquitto/tls"]
    assert kind == "bind"
    assert raw_compose()["services"]["mosquitto"]["volumes"][-1].endswith(":/mosquitto/tls:ro")
    # The default directory is in the repository, its contents (keys) out of git.
    ignore = (ROOT / source / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore


def env_of_init_password(data: Mapping[str, Any], service: str) -> str:
    """The password init gives the service's account."""
    return environment(data["init"])[f"GW_BROKER_{service.upper()}_PASSWORD"]


# --- static tests: the image ---------------------------------------------------------


def test_dockerfile_builds_a_non_root_gridwatch_image_on_the_supported_python() -> None:
    instructions = dockerfile_instructions()
    args = dict(
        arguments.partition("=")[::2] for keyword, arguments in instructions if keyword == "ARG"
    )
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], arguments.split()[0])
        for keyword, arguments in instructions
        if keyword == "FROM"
    ]
    assert len(bases) >= 1
    for base in bases:
        version = re.fullmatch(r"python:(\d+\.\d+)-slim(?:-\w+)?", base)
        assert version, f"base image {base} is not python:X.Y-slim"
        assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version[1] + ".0")
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    entrypoint = [a for k, a in final if k == "ENTRYPOINT"]
    assert entrypoint == ['["gridwatch"]'], "exec form, the console script"
    assert "gridwatch" in PYPROJECT["project"]["scripts"]
    users = [a for k, a in final if k == "USER"]
    assert users, "the runtime stage must switch to an unprivileged user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert not [k for k, _ in instructions if k == "HEALTHCHECK"], "per service, in compose"
    installs = [a for k, a in instructions if k == "RUN" and "pip install" in a]
    assert installs
    for command in installs:
        assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", command), "non-editable"
        assert "[dev]" not in command, "no dev dependencies in the image"
    assert any(re.search(r"pip install .*--constraint \S+ \.(\s|$)", c) for c in installs)


def test_dockerfile_copies_only_what_the_context_holds() -> None:
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY" or "--from=" in arguments:
            continue
        *sources, _ = shlex.split(arguments)
        for source in sources:
            if source == ".":
                continue
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not ignored(source), f"COPY {source}: .dockerignore leaves it out"


def test_constraints_lock_exactly_pyprojects_pins() -> None:
    locked = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", f"constraints.txt: {line} is not pinned"
            locked[canonicalize_name(requirement.name)] = spec.version
    for dependency in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(dependency)
        [spec] = requirement.specifier
        name = canonicalize_name(requirement.name)
        assert locked.get(name) == spec.version, (
            f"pyproject.toml pins {dependency}, deploy/constraints.txt has {locked.get(name)}: "
            "run `sh deploy/lock-constraints.sh`"
        )
    assert "gridwatch" not in locked
    for dependency in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        name = canonicalize_name(Requirement(dependency).name)
        assert name not in locked, f"dev dependency {name} in the image's lock"


def test_dockerignore_keeps_secrets_and_state_out_and_the_package_in() -> None:
    for path in (
        ".env",
        ".env.local",
        ".venv/bin/python",
        ".git/HEAD",
        ".gridwatch/gridwatch.db",
        "gridwatch.egg-info/PKG-INFO",
        "registry/__pycache__/db.cpython-311.pyc",
        "tests/test_compose.py",
        "deploy/README.md",
        "docker-compose.yml",
    ):
        assert ignored(path), f"{path} must stay out of the build context"
    needed = ["pyproject.toml", "README.md", "deploy/constraints.txt"]
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        files = [
            p for p in (ROOT / package).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
        assert (ROOT / package / "__init__.py") in files, package
        needed += [p.relative_to(ROOT).as_posix() for p in files]
    left_out = [path for path in needed if ignored(path)]
    assert not left_out, f".dockerignore leaves out what `pip install .` needs: {left_out}"


# --- static tests: deploy/README.md -------------------------------------------------


class _ComposeOverrideLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus compose's ``!reset`` and ``!override`` merge tags."""


def _construct_tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeOverrideLoader.add_constructor("!reset", _construct_tagged)
_ComposeOverrideLoader.add_constructor("!override", _construct_tagged)


README = ROOT / "README.md"


def compose_docs() -> dict[str, str]:
    """The documentation of the compose deployment: deploy/README.md, and the README's
    walkthrough and scale-out sections."""
    readme = README.read_text(encoding="utf-8")
    start = readme.index("## Deploying with docker compose")
    end = readme.index("\n## ", readme.index("## Scaling out"))
    return {
        "deploy/README.md": DEPLOY_README.read_text(encoding="utf-8"),
        "README.md": readme[start:end],
    }


def override_snippets(text: str) -> list[dict[str, Any]]:
    """The compose files a document shows, as compose sees them with :func:`operator_env`
    (their merge tags too)."""
    return [
        interpolated(
            yaml.load(snippet, Loader=_ComposeOverrideLoader),  # noqa: S506 -- a SafeLoader
            operator_env(),
        )
        for snippet in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    ]


def extended(name: str, service: Mapping[str, Any]) -> dict[str, Any]:
    """A snippet's service over the main file's service it overrides or extends."""
    base = service.get("extends", {}).get("service", name)
    merged = dict(services()[base])
    merged["environment"] = environment(merged) | environment(service)
    return merged | {k: v for k, v in service.items() if k not in ("environment", "extends")}


def test_doc_compose_snippets_name_real_services_and_commands() -> None:
    names = set(services())
    fields = set(Settings.model_fields)
    shown = 0
    for doc, text in compose_docs().items():
        for data in override_snippets(text):
            shown += 1
            for name, service in data.get("services", {}).items():
                service = service or {}
                extends = service.get("extends")
                if extends:
                    assert extends["file"] == COMPOSE_FILE.name, doc
                assert (extends or {}).get("service", name) in names, f"{doc}: no service {name}"
                for key in environment(service):
                    if key.startswith("GW_"):
                        assert key[3:].lower() in fields, key
                for target in depends_on(service):
                    assert target in names, f"{doc}: {name} depends on {target}"
                if "command" in service:
                    for argv in gridwatch_invocations(extended(name, service)):
                        check_invocation(argv)
    assert shown == 2, "the InfluxDB 2.x/3.x override and the scale-out override"


def test_the_compose_files_follow_the_compose_specification() -> None:
    # What `docker compose config` checks first, without Docker (which cannot run here):
    # the file and the docs' override files against the Compose Specification's JSON
    # schema, as check-jsonschema ships it. Its "unevaluated properties" catch a
    # misspelt key, and its types a wrong value (a depends_on condition, a healthcheck).
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    files = {COMPOSE_FILE.name: yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))}
    for doc, text in compose_docs().items():
        for i, snippet in enumerate(override_snippets(text)):
            files[f"{doc}, override {i + 1}"] = snippet
    assert len(files) == 3
    problems = [
        f"{name}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
        for name, data in files.items()
        for error in validator.iter_errors(data)
    ]
    assert problems == []
    misspelt = json.loads(json.dumps(files[COMPOSE_FILE.name]))
    misspelt["services"]["api"]["helthcheck"] = misspelt["services"]["api"].pop("healthcheck")
    assert not validator.is_valid(misspelt)


def test_scale_out_override_gives_each_ingest_its_own_session_in_one_group() -> None:
    [override] = override_snippets(compose_docs()["README.md"])
    replicas = {"ingest": services()["ingest"]} | {
        name: extended(name, service) for name, service in override["services"].items()
    }
    assert len(replicas) >= 2
    for name, replica in replicas.items():
        assert gridwatch_invocations(replica) == [["ingest"]], name
        assert depends_on(replica) == depends_on(services()["ingest"]), name
    envs = [environment(replica) for replica in replicas.values()]
    assert len({env["GW_INGEST_CLIENT_ID"] for env in envs}) == len(envs), "one session each"
    assert len({env["GW_INGEST_SHARE_GROUP"] for env in envs}) == 1, "one shared subscription"


def test_external_influxdb_override_leaves_nothing_on_the_bundled_one() -> None:
    [override] = override_snippets(compose_docs()["deploy/README.md"])
    changed = override["services"]
    assert changed["influxdb"]["profiles"], "the bundled InfluxDB is never started"
    for name, service in services().items():
        if name == "influxdb":
            continue
        mine = changed.get(name) or {}
        # The override replaces depends_on wholesale (!override, !reset).
        deps = depends_on(mine) if "depends_on" in mine else depends_on(service)
        assert "influxdb" not in deps, f"{name} would wait for the bundled InfluxDB"
        env = environment(extended(name, mine))
        for key in ("GW_INFLUX_URL", "GRIDWATCH_INFLUX_URL"):
            if key in env and name != "simulate":  # simulate never reads InfluxDB
                assert "//influxdb:" not in env[key], f"{name}: {key} still names the bundled one"
    init = extended("init", changed["init"])
    assert "--no-influx-database" in gridwatch_invocations(init)[0]
    service_account = environment(services()["ingest"])["GW_INFLUX_USER"]
    assert environment(init)["GW_INFLUX_USER"] == service_account, "no admin: no CREATE"


def docker_compose_commands(text: str) -> list[list[str]]:
    """Every ``docker compose`` command a document shows, as argv after ``docker compose``."""
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    lines = [
        line.strip()
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith("docker compose ")
    ]
    lines += re.findall(r"`(docker compose [^`]+)`", text)
    return [shlex.split(line, comments=True)[2:] for line in lines]


def check_compose_command(argv: list[str]) -> None:
    """Fail unless ``docker compose *argv`` names real profiles, services, files and a
    real gridwatch command."""
    profiles = {p for s in services().values() for p in s.get("profiles", [])}
    while argv[0].startswith("-"):
        option, value, *argv = argv
        assert option == "--profile" and value in profiles, f"{option} {value}"
    command, *rest = argv
    assert command in {"build", "up", "down", "ps", "logs", "run", "exec", "restart", "stop"}
    mounts: dict[str, str] = {}
    while rest and rest[0].startswith("-"):
        option, *rest = rest
        if option == "-v":
            host, container, *_ = rest.pop(0).split(":")
            path = ROOT / host.removeprefix("$PWD/")
            assert path.is_file(), f"-v {host}: no such file in the repository"
            mounts[container] = str(path)
        elif option == "-e":
            name = rest.pop(0).partition("=")[0]
            assert name[3:].lower() in Settings.model_fields, name
        elif option == "--scale":
            assert rest.pop(0).partition("=")[0] in services(), "--scale names a service"
    targets = rest[:1] if command in ("run", "exec") else rest
    for name in targets:
        assert name in services(), f"docker compose {command}: no service {name}"
    if command == "run":
        check_invocation([mounts.get(arg, arg) for arg in rest[1:]])


def test_doc_docker_compose_commands_are_real() -> None:
    for doc, text in compose_docs().items():
        commands = docker_compose_commands(text)
        assert commands, doc
        for argv in commands:
            try:
                check_compose_command(argv)
            except AssertionError as exc:
                pytest.fail(f"{doc}: docker compose {shlex.join(argv)}: {exc}")


def test_doc_variables_exist() -> None:
    known = set(env_example()) | {f"GW_{field.upper()}" for field in Settings.model_fields}
    known |= {key for s in services(raw_compose()).values() for key in environment(s)}
    for doc, text in compose_docs().items():
        for name in re.findall(r"`\$?([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", text):
            assert name in known, f"{doc}: `{name}` is no variable of .env, compose or gridwatch"


def test_doc_secret_generation_fills_every_secret() -> None:
    """The README's loop generates what .env.example leaves empty: exactly the secrets."""
    [pattern] = re.findall(r"for v in \$\(grep -o '([^']*)' \.env", compose_docs()["README.md"])
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    generated = {line.rstrip("=") for line in lines if re.fullmatch(pattern, line)}
    assert generated == {name for name, value in env_example().items() if not value}
    assert generated == {name for name in env_example() if SECRET.search(name)}


# --- the rehearsal --------------------------------------------------------------------


class DeployMosquitto(Mosquitto):
    """The broker as compose runs it: deploy/mosquitto/run.sh and mosquitto.conf, paths local.

    ``auth_dir`` is where gridwatch writes the broker's files (the volume mosquitto-auth),
    ``tls_dir`` the certificate and key (MQTT_TLS_DIR); the TLS listener on ``tls_port``.
    """

    def __init__(self, state_dir: Path, auth_dir: Path, tls_dir: Path) -> None:
        super().__init__(state_dir)
        self.auth_dir = auth_dir
        self.tls_dir = tls_dir
        self.tls_port = free_port()
        # run.sh is root in the container, so it reads any key; here it runs as the
        # broker's account, which must be given the operator's files.
        self._own(tls_dir)
        # As the volume's directory belongs to gridwatch's user in compose, this one
        # belongs to the broker's here, so the files written into it (as root) do too.
        auth_dir.mkdir(parents=True)
        self._own(auth_dir)

    def _configure(self) -> None:
        text = DEPLOY_MOSQUITTO_CONF.read_text(encoding="utf-8")
        local, listeners = re.subn(
            r"^listener 1883$", f"listener {self.port} 127.0.0.1", text, flags=re.M
        )
        local, locations = re.subn(
            r"^persistence_location /mosquitto/data/$",
            f"persistence_location {self.state_dir}/",
            local,
            flags=re.M,
        )
        local, auth_files = re.subn(
            r"^(password_file|acl_file|include_dir) /mosquitto/run/",
            rf"\1 {self.state_dir}/run/",
            local,
            flags=re.M,
        )
        assert (listeners, locations, auth_files) == (1, 1, 3), (
            "the deploy config changed: adapt the rehearsal"
        )
        self.config_path.write_text(local, encoding="utf-8")
        self.config_path.chmod(0o644)
        script = self.state_dir / "run.sh"
        script.write_text((ROOT / "deploy" / "mosquitto" / "run.sh").read_text(encoding="utf-8"))
        script.chmod(0o644)

    def _command(self) -> list[str]:
        return [
            find_binary("env", "coreutils"),
            f"PATH={Path(self._binary).parent}:/usr/bin:/bin",
            f"GW_BROKER_AUTH_SOURCE={self.auth_dir}",
            f"GW_BROKER_AUTH_LIVE={self.state_dir}/run",
            f"GW_BROKER_CONF={self.config_path}",
            f"GW_BROKER_TLS_SOURCE={self.tls_dir}",
            f"GW_BROKER_TLS_LISTENER={self.tls_port} 127.0.0.1",
            "/bin/sh",
            str(self.state_dir / "run.sh"),
        ]


class AuthInfluxd(Influxd):
    """influxd with authentication on, as INFLUXDB_HTTP_AUTH_ENABLED makes the image's."""

    def _configure(self) -> None:
        super()._configure()
        text = self.config_path.read_text(encoding="utf-8")
        assert "\n[http]\n" in text
        self.config_path.write_text(
            text.replace("\n[http]\n", "\n[http]\n  auth-enabled = true\n"), encoding="utf-8"
        )


def bootstrap_influxdb(url: str, env: Mapping[str, str]) -> None:
    """What the influxdb:1.8 image does on its first start, from its environment."""
    database, admin, admin_password = (
        env["INFLUXDB_DB"],
        env["INFLUXDB_ADMIN_USER"],
        env["INFLUXDB_ADMIN_PASSWORD"],
    )
    user, password = env["INFLUXDB_USER"], env["INFLUXDB_USER_PASSWORD"]
    with InfluxClient(url, database) as anonymous:  # the first user needs no login
        anonymous.query(
            f"CREATE USER {quote_ident(admin)} WITH PASSWORD {quote_literal(admin_password)} "
            "WITH ALL PRIVILEGES"
        )
    with InfluxClient(url, database, username=admin, password=admin_password) as client:
        client.query(f"CREATE DATABASE {quote_ident(database)}")
        client.query(f"CREATE USER {quote_ident(user)} WITH PASSWORD {quote_literal(password)}")
        client.query(f"GRANT ALL ON {quote_ident(database)} TO {quote_ident(user)}")
        reader, reader_password = env["INFLUXDB_READ_USER"], env["INFLUXDB_READ_USER_PASSWORD"]
        client.query(
            f"CREATE USER {quote_ident(reader)} WITH PASSWORD {quote_literal(reader_password)}"
        )
        client.query(f"GRANT READ ON {quote_ident(database)} TO {quote_ident(reader)}")


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: Path) -> None:
    """Poll ``check`` until true; fail with the services' log tails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = [
                f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                for p in logs.glob("*.log")
            ]
            pytest.fail(f"{what}: not within {timeout} s\n" + "\n".join(tails))
        time.sleep(0.5)


def dev_ca(directory: Path) -> None:
    """``gridwatch broker dev-ca`` for the rehearsal's broker (localhost), as the docs say."""
    gridwatch = Path(sys.executable).parent / "gridwatch"
    command = [str(gridwatch), "broker", "dev-ca", str(directory), "--host", "localhost"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def certificate(directory: Path) -> bytes:
    """The server certificate of a TLS directory (``server.crt``), DER."""
    return ssl.PEM_cert_to_DER_cert((directory / "server.crt").read_text(encoding="ascii"))


def served_certificate(port: int, ca_file: Path) -> bytes:
    """The certificate the broker's TLS listener presents now, DER (verified by ``ca_file``)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def mqtt_login(url: str) -> bool:
    """Whether the broker of ``url`` accepts its login (gridwatch's own MQTT client)."""
    outcome: list[bool] = []
    client = make_client(BrokerAddress.from_url(url), f"rehearsal-{uuid.uuid4().hex[:8]}")
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(not reason.is_failure)
    address = BrokerAddress.from_url(url)
    client.connect(address.host, address.port)  # the TLS handshake happens here
    try:
        deadline = time.monotonic() + 10
        while not outcome and time.monotonic() < deadline:
            client.loop(0.2)
    finally:
        client.disconnect()
        # A refused login leaves paho's socket open until its next loop: close it here.
        sock = client.socket()
        if sock is not None:
            sock.close()
    assert outcome, f"no CONNACK from {address.host}:{address.port}"
    return outcome[0]


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a service's samples ``name`` with ``labels``, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    total = 0.0
    for line in lines:
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def on_local_servers(
    name: str, env: Mapping[str, str], local_address: Mapping[str, str]
) -> dict[str, str]:
    """A service's compose environment with the servers' ``host:port`` mapped to local ones."""
    env = dict(env)
    for key in ("GW_MQTT_URL", "GW_INFLUX_URL", "GW_DATABASE_URL"):
        for address, local in local_address.items():
            env[key] = env[key].replace(f"@{address}", f"@{local}")
            env[key] = env[key].replace(f"//{address}", f"//{local}")
        assert "127.0.0.1" in env[key], f"{name}: {key}={env[key]} names no service"
    return env


@pytest.mark.integration
def test_rehearsal_of_the_compose_deployment(stack_root: Path, postgres: Postgres) -> None:
    bindir = Path(sys.executable).parent
    assert (bindir / "gridwatch").exists(), "run the suite with the project's virtualenv"
    # Under stack_root: the servers' system accounts must reach their state directories.
    server_dir = stack_root / f"compose-{uuid.uuid4().hex[:8]}"
    logs = server_dir / "services"
    logs.mkdir(parents=True)

    with ExitStack() as stack:
        # Started after init, which writes its files (the broker waits for them in compose).
        auth_dir = server_dir / "state" / "mosquitto" / "auth"
        # MQTT_TLS_DIR with the development CA's files, made as deploy/README.md says.
        tls_dir = server_dir / "tls"
        dev_ca(tls_dir)
        broker = DeployMosquitto(server_dir / "mosquitto", auth_dir, tls_dir)
        influxd = stack.enter_context(AuthInfluxd(server_dir / "influxd"))
        sql = make_url(postgres.create_database(f"compose_{uuid.uuid4().hex[:8]}"))
        env_file = operator_env() | {
            "POSTGRES_USER": str(sql.username),
            "POSTGRES_PASSWORD": str(sql.password),
            "POSTGRES_DB": str(sql.database),
        }
        data = services(compose(env_file))
        bootstrap_influxdb(influxd.url, environment(data["influxdb"]))
        local_address = {
            "mosquitto:1883": f"127.0.0.1:{broker.port}",
            "influxdb:8086": f"127.0.0.1:{influxd.port}",
            "postgres:5432": f"127.0.0.1:{sql.port}",
        }
        metrics_port, api_port, imagery_port = free_port(), free_port(), free_port()
        alerts_port = free_port()

        def env_of(name: str) -> dict[str, str]:
            """The service's compose environment, host names mapped to the local servers."""
            env = on_local_servers(name, environment(data[name]), local_address)
            overrides = {
                "GW_API_HOST": "127.0.0.1",
                "GW_API_PORT": str(api_port),
                "GW_INGEST_METRICS_PORT": str(metrics_port),
                "GW_IMAGERY_METRICS_PORT": str(imagery_port),
                "GW_ALERTS_METRICS_PORT": str(alerts_port),
                "GW_IMAGERY_DIR": str(server_dir / "imagery"),
            }
            env |= {k: v for k, v in overrides.items() if k in env}
            return env | {
                "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
                "HOME": str(server_dir),
                "PYTHONUNBUFFERED": "1",
                "GW_STATE_DIR": str(server_dir / "state"),
                # So that the rehearsal does not wait 30 s for ingest's registry reload.
                "GW_REGISTRY_REFRESH_S": "2",
            }

        def argv_of(name: str) -> list[str]:
            service = data[name]
            entrypoint = as_argv(service.get("entrypoint")) or ["gridwatch"]
            return entrypoint + as_argv(service.get("command"))

        def healthy(name: str) -> Callable[[], bool]:
            """The service's own health check, run as docker would (port mapped)."""
            argv = healthcheck_argv(data[name])
            if name == "mosquitto":
                argv[-1] = argv[-1].replace("-p 1883", f"-p {broker.port}")
            env = env_of(name) if is_gridwatch(data[name]) else dict(os.environ)

            def check() -> bool:
                done = subprocess.run(argv, env=env, capture_output=True, timeout=20, check=False)
                return done.returncode == 0

            return check

        processes: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str) -> None:
            log = stack.enter_context((logs / f"{name}.log").open("wb"))
            processes[name] = subprocess.Popen(
                argv_of(name), env=env_of(name), stdout=log, stderr=subprocess.STDOUT
            )

        def stop_all() -> None:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                process.wait()

        stack.callback(stop_all)

        init_output = ""
        for attempt in range(2):  # compose runs init again on every `up`
            done = subprocess.run(
                argv_of("init"), env=env_of("init"), capture_output=True, text=True, timeout=120
            )
            init_output += done.stdout + done.stderr
            assert done.returncode == 0, f"init, run {attempt + 1}:\n{init_output}"
        stack.enter_context(broker)
        assert healthy("mosquitto")(), "the broker's health check fails"

        # The TLS listener: gridwatch's client verifies the broker with the CA of the URL
        # and logs in; anonymous is refused there too.
        tls = f"localhost:{broker.tls_port}?cafile={tls_dir / 'ca.crt'}"
        account = f"gridwatch.ingest:{env_of_init_password(data, 'ingest')}"
        assert mqtt_login(f"mqtts://{account}@{tls}"), "a service over TLS"
        assert not mqtt_login(f"mqtts://{tls}"), "anonymous over TLS"
        # Without it a client trusts the system's CAs alone, as paho does with no cafile
        # (here, not through paho, which leaves the failed socket unclosed).
        with (
            socket.create_connection(("127.0.0.1", broker.tls_port)) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
        # Renewal: new files copied over the old ones are served within about 2 s, no
        # restart (run.sh reloads the broker), as an ACME deploy hook would copy them.
        renewed = server_dir / "renewed"
        shutil.copytree(tls_dir, renewed)
        dev_ca(renewed)  # the same CA, a new server certificate
        old, new = served_certificate(broker.tls_port, tls_dir / "ca.crt"), certificate(renewed)
        assert old != new
        for name in ("server.key", "server.crt"):
            shutil.copyfile(renewed / name, tls_dir / name)
        wait_for(
            "the renewed certificate served",
            lambda: served_certificate(broker.tls_port, tls_dir / "ca.crt") == new,
            10,
            logs,
        )

        assert not healthy("alerts")(), "healthy before alerts runs"
        start("alerts")
        wait_for("alerts healthy", healthy("alerts"), 60, logs)
        assert metric(alerts_port, "gridwatch_alerts_sql_up") == 1, "PostgreSQL, from compose"
        start("imagery")
        wait_for("imagery healthy", healthy("imagery"), 60, logs)
        start("ingest")
        wait_for("ingest healthy", healthy("ingest"), 60, logs)
        start("api")
        wait_for("api healthy", healthy("api"), 60, logs)

        start("simulate")
        ingest_env = env_of("ingest")
        with InfluxClient(
            ingest_env["GW_INFLUX_URL"],
            ingest_env["GW_INFLUX_DB"],
            username=ingest_env["GW_INFLUX_USER"],
            password=ingest_env["GW_INFLUX_PASSWORD"],
        ) as reader:
            wait_for(
                "simulated points in InfluxDB",
                lambda: metric(metrics_port, "gridwatch_ingest_written_total") >= 1000,
                120,
                logs,
            )
            assert reader.query("SHOW MEASUREMENTS"), (
                "the services' account reads what ingest wrote"
            )
        grafana_env = environment(data["grafana"]) | {
            "GRIDWATCH_INFLUX_URL": ingest_env["GW_INFLUX_URL"]
        }
        datasource = grafana_datasource(grafana_env)
        with InfluxClient(
            datasource["url"],
            datasource["jsonData"]["dbName"],
            username=datasource["user"],
            password=datasource["secureJsonData"]["password"],
        ) as grafana:
            assert grafana.query("SHOW MEASUREMENTS"), "Grafana's account reads the data"
            with pytest.raises(InfluxRejected):
                grafana.write(b"door,community=x,device_id=y seq=1i 1")
        assert metric(metrics_port, "gridwatch_ingest_rejected_total", reason="unknown_device") == 0

        # alerts and imagery at work with their compose environment: the scenario's
        # faults open alerts, the robot's night patrol sends snapshots.
        engine = sqlalchemy.create_engine(sql)
        stack.callback(engine.dispose)

        def stored(table: str) -> bool:
            query = sqlalchemy.text(f"SELECT count(*) FROM {table}")
            with engine.connect() as connection:
                return bool(connection.execute(query).scalar())

        wait_for("an alert opened by the alerts service", lambda: stored("alerts"), 300, logs)
        # A snapshot's row may come first, from the detection event: wait for its files.
        files = server_dir / "imagery"
        wait_for(
            "a snapshot stored by imagery in GW_IMAGERY_DIR",
            lambda: any(path.is_file() for path in files.rglob("*")),
            300,
            logs,
        )

        # Producers first, as compose down would.
        for name in ("simulate", "api", "ingest", "imagery", "alerts"):
            processes[name].send_signal(signal.SIGTERM)
            status = processes[name].wait(timeout=60)
            # uvicorn shuts down, then re-raises the signal: docker sees 143, as for SIGTERM.
            clean = (0, -signal.SIGTERM) if name == "api" else (0,)
            assert status in clean, f"{name} did not stop cleanly: {status}"
        api_log = (logs / "api.log").read_text(encoding="utf-8")
        assert "Application shutdown complete." in api_log

    output = "".join(p.read_text(encoding="utf-8") for p in logs.glob("*.log")) + init_output
    for name, value in env_file.items():
        if SECRET.search(name):
            assert value not in output, f"{name}'s value appears in a service's output"


def allow_connections(postgres: Postgres, database: str, allowed: bool) -> None:
    """Open or close a database to every client; closing also ends its sessions.

    What the alerts service meets when its database server goes away: its
    connections break and new ones are refused.
    """
    with postgres._admin() as admin:
        admin.execute(
            pgsql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                pgsql.Identifier(database), pgsql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


@pytest.mark.integration
def test_alerts_is_unhealthy_while_its_database_refuses_connections(
    stack_root: Path, mosquitto: Mosquitto, influxd: Influxd, postgres: Postgres
) -> None:
    """compose's health check of alerts: healthy, unhealthy while PostgreSQL refuses it
    (the broker still up), healthy again once it answers.

    The service runs with its compose environment on the session's servers (a database
    of its own, migrated as init does; the broker admits anyone, so the service's
    account passes) instead of the rehearsal's, since the outage must not reach them.
    """
    bindir = Path(sys.executable).parent
    server_dir = stack_root / f"compose-sql-{uuid.uuid4().hex[:8]}"
    logs = server_dir / "services"
    logs.mkdir(parents=True)
    database = f"compose_{uuid.uuid4().hex[:8]}"
    sql = make_url(postgres.create_database(database))
    migrate(sql.render_as_string(hide_password=False))
    data = services(
        compose(
            operator_env()
            | {
                "POSTGRES_USER": str(sql.username),
                "POSTGRES_PASSWORD": str(sql.password),
                "POSTGRES_DB": str(sql.database),
            }
        )
    )
    local_address = {
        "mosquitto:1883": f"127.0.0.1:{mosquitto.port}",
        "influxdb:8086": f"127.0.0.1:{influxd.port}",
        "postgres:5432": f"127.0.0.1:{sql.port}",
    }
    port = free_port()
    env = on_local_servers("alerts", environment(data["alerts"]), local_address) | {
        "GW_ALERTS_METRICS_PORT": str(port),
        # Its own persistent session on the shared broker, not compose's fixed id.
        "GW_ALERTS_CLIENT_ID": f"compose-sql-{database}",
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(server_dir),
        "PYTHONUNBUFFERED": "1",
        "GW_STATE_DIR": str(server_dir / "state"),
    }
    argv = ["gridwatch", *as_argv(data["alerts"]["command"])]

    def healthy() -> bool:
        check = healthcheck_argv(data["alerts"])
        return subprocess.run(check, env=env, capture_output=True, timeout=20).returncode == 0

    with (logs / "alerts.log").open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for("alerts healthy", healthy, 60, logs)
            allow_connections(postgres, database, False)
            try:
                wait_for("alerts unhealthy without SQL", lambda: not healthy(), 30, logs)
                assert metric(port, "gridwatch_alerts_broker_up") == 1, "SQL alone is down"
                assert metric(port, "gridwatch_alerts_sql_up") == 0
            finally:
                allow_connections(postgres, database, True)
            wait_for("alerts healthy once SQL answers", healthy, 30, logs)
        finally:
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=60)
    assert status == 0, f"alerts did not stop cleanly: {status}"


@pytest.mark.integration
def test_the_compose_broker_without_a_certificate_has_no_tls_listener(stack_root: Path) -> None:
    """compose's default: MQTT_TLS_DIR empty, so 1883 alone; a TLS listener written at an
    earlier start (the container's file system outlives a restart) is gone."""
    server_dir = stack_root / f"compose-plain-{uuid.uuid4().hex[:8]}"
    tls_dir = server_dir / "tls"
    tls_dir.mkdir(parents=True)
    auth_dir = server_dir / "auth"
    broker = DeployMosquitto(server_dir / "mosquitto", auth_dir, tls_dir)
    for name in ("passwords", "acl"):
        (auth_dir / name).write_text("", encoding="utf-8")
        (auth_dir / name).chmod(0o644)
    stale = broker.state_dir / "run" / "conf.d" / "tls.conf"
    stale.parent.mkdir(parents=True)
    stale.write_text(f"listener {broker.tls_port} 127.0.0.1\n", encoding="utf-8")
    broker._own(broker.state_dir / "run")
    with broker:
        assert not stale.exists()
        assert not mqtt_login(f"mqtt://127.0.0.1:{broker.port}"), "anonymous refused"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5).close()
    assert "no TLS listener" in broker.log_path.read_text(encoding="utf-8")


@pytest.mark.integration
def test_init_applies_a_changed_retention_on_the_next_up(influxd: Influxd) -> None:
    """deploy/README.md: change INFLUX_RETENTION in .env, `docker compose up -d`."""
    with InfluxClient(influxd.url, f"retention_{uuid.uuid4().hex[:8]}") as client:
        try:
            client.ensure_database("400d")
            client.ensure_database("200d")
            [policies] = client.query(f"SHOW RETENTION POLICIES ON {quote_ident(client.database)}")
        finally:
            client.query(f"DROP DATABASE {quote_ident(client.database)}")
    [default] = [row for row in policies.records() if row["default"]]
    assert default["duration"] == "4800h0m0s"


@pytest.mark.integration
def test_init_without_creating_the_influxdb_database(stack_root: Path) -> None:
    """The InfluxDB 2.x/3.x path: `init --no-influx-database` with the services' account.

    That account may not CREATE DATABASE, as 2.x and 3.x refuse it over the v1 API:
    init must then only check the database the operator made, and say when it is missing.
    """
    server_dir = stack_root / f"external-{uuid.uuid4().hex[:8]}"
    with AuthInfluxd(server_dir / "influxd") as influxd:
        env_file = operator_env()
        bootstrap_influxdb(influxd.url, environment(services(compose(env_file))["influxdb"]))
        service = {
            key: value
            for key, value in environment(services(compose(env_file))["ingest"]).items()
            if key.startswith("GW_INFLUX")
        }

        def init(*args: str, database: str) -> subprocess.CompletedProcess[str]:
            env = service | {
                "GW_INFLUX_URL": influxd.url,
                "GW_INFLUX_DB": database,
                "GW_STATE_DIR": str(server_dir / "state"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            }
            return subprocess.run(
                ["gridwatch", "init", *args], env=env, capture_output=True, text=True, timeout=120
            )

        assert init(database=service["GW_INFLUX_DB"]).returncode != 0, "not allowed to create"
        done = init("--no-influx-database", database=service["GW_INFLUX_DB"])
        assert done.returncode == 0, done.stderr
        assert (server_dir / "state" / "gridwatch.db").is_file(), "the SQL schema is migrated"
        missing = init("--no-influx-database", database="no_such_bucket")
        assert missing.returncode == 1
        # 1.x answers an account without rights on it as it would a missing database.
        assert "gridwatch init: InfluxDB:" in missing.stderr
        assert "requires READ on no_such_bucket" in missing.stderr
        assert "Traceback" not in missing.stderr, "a clear refusal, not a crash"
