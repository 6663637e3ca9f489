"""deploy/postgres/init.sql, which compose's PostgreSQL runs on its first start: for every
database a host container's manifest names, a login role that owns it and is no superuser, with
the password the container's <NAME>_DATABASE_URL carries, and limits set on the role (temporary
files, statement and idle-transaction timeouts). Read as text, then run for real on a throwaway
PostgreSQL cluster of this machine's (Debian's `postgresql`, which ./test.sh installs).

Run from the repository root: target/tools/venv/bin/python -m unittest discover -s deploy/tests -v
"""

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import unittest
from urllib.parse import unquote, urlsplit

import stack
from stack import ROOT

INIT = "deploy/postgres/init.sql"
PRIVILEGED = ("SUPERUSER", "CREATEDB", "CREATEROLE", "REPLICATION", "BYPASSRLS")
# Roles that let SQL reach the server's files or every database's data; the host refuses them.
PRIVILEGED_GROUPS = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                     "pg_read_all_data", "pg_write_all_data")
# Set on every role, in every database (ALTER ROLE ... SET). temp_file_limit is a superuser's
# setting: the role cannot change it in its sessions.
ROLE_SETTINGS = {"temp_file_limit": "1GB", "statement_timeout": "30s", "idle_in_transaction_session_timeout": "30s"}


def sql():
    text = (ROOT / INIT).read_text(encoding="utf-8")
    return re.sub(r"--[^\n]*", "", text)


def roles():
    """{role: (attributes, password)} of the CREATE ROLE statements."""
    found = {}
    for name, rest in re.findall(r"CREATE\s+ROLE\s+(\w+)\s+([^;]*);", sql(), re.IGNORECASE):
        password = re.search(r"PASSWORD\s+'([^']*)'", rest, re.IGNORECASE)
        words = set(re.sub(r"'[^']*'", "", rest).upper().split())
        found[name] = (words, password.group(1) if password else None)
    return found


def role_settings():
    """{role: {setting: value}} of the ALTER ROLE ... SET statements (for every database)."""
    found = {}
    pattern = r"ALTER\s+ROLE\s+(\w+)\s+SET\s+(\w+)\s*(?:=|\bTO\b)\s*('[^']*'|[^\s;]+)\s*;"
    for role, name, value in re.findall(pattern, sql(), re.IGNORECASE):
        found.setdefault(role, {})[name.lower()] = value.strip("'")
    return found


def database_owners():
    owners = dict(re.findall(r"CREATE\s+DATABASE\s+(\w+)\s+OWNER\s+(\w+)", sql(), re.IGNORECASE))
    owners.update(re.findall(r"ALTER\s+DATABASE\s+(\w+)\s+OWNER\s+TO\s+(\w+)", sql(), re.IGNORECASE))
    return owners


def database_urls():
    """(host service, component, parsed URL) of every component of every host container."""
    for host in stack.host_services():
        for component in stack.host_config(host)["components"]:
            yield host, component["name"], urlsplit(component["database_url"])


def init_mount():
    return [(s, t) for s, t, _ in stack.volumes("postgres") if t.startswith("/docker-entrypoint-initdb.d/")]


class InitScriptTest(unittest.TestCase):
    def test_compose_runs_it_on_the_first_start(self):
        self.assertEqual([(ROOT / s).resolve() for s, _ in init_mount()], [ROOT / INIT])

    def test_each_manifest_database_is_owned_by_a_login_role_that_is_no_superuser(self):
        owners, created = database_owners(), roles()
        for host, component, url in database_urls():
            with self.subTest(host=host, component=component):
                database = url.path.lstrip("/")
                self.assertEqual(owners.get(database), url.username, "the URL's role does not own the database")
                self.assertIn(url.username, created)
                words, password = created[url.username]
                self.assertIn("LOGIN", words)
                self.assertFalse(words & set(PRIVILEGED), f"{url.username} may {words & set(PRIVILEGED)}")
                self.assertEqual(unquote(url.password or ""), password, "not the password the role was made with")
        self.assertNotRegex(sql(), re.compile(r"GRANT\s+pg_", re.IGNORECASE))

    def test_each_role_has_the_limits(self):
        roles_named = set(roles()) | {url.username for _, _, url in database_urls()}
        settings = role_settings()
        for role in sorted(roles_named):
            with self.subTest(role=role):
                self.assertEqual({k: v for k, v in settings.get(role, {}).items() if k in ROLE_SETTINGS},
                                 ROLE_SETTINGS)
        self.assertNotRegex(sql(), re.compile(r"ALTER\s+ROLE\s+\w+\s+IN\s+DATABASE", re.IGNORECASE),
                            "a setting for one database only")

    def test_every_database_is_closed_to_public(self):
        revoked = set(re.findall(r"REVOKE\s+ALL\s+ON\s+DATABASE\s+(\w+)\s+FROM\s+PUBLIC", sql(), re.IGNORECASE))
        self.assertEqual(revoked, set(database_owners()))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_binaries():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class InitScriptOnPostgresTest(unittest.TestCase):
    """init.sql run by a superuser on a fresh cluster, as the image's entrypoint runs it."""

    @classmethod
    def setUpClass(cls):
        binaries = server_binaries()
        if binaries is None or shutil.which("psql") is None:
            raise unittest.SkipTest("PostgreSQL's server programs are not installed (ensure_postgres installs them)")
        cls.folder = tempfile.mkdtemp(prefix="init-sql-")
        cls.addClassCleanup(shutil.rmtree, cls.folder, ignore_errors=True)
        # The server refuses to run as root: as root, run it as the `postgres` account.
        cls.as_server = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(cls.folder, account.pw_uid, account.pw_gid)
            cls.as_server = ["runuser", "-u", "postgres", "--"]
        cls.port = free_port()
        data = os.path.join(cls.folder, "data")
        subprocess.run(cls.as_server + [f"{binaries}/initdb", "-D", data, "-U", "postgres", "--auth-local=trust",
                                        "--auth-host=scram-sha-256", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        options = f"-c listen_addresses=127.0.0.1 -c port={cls.port} -c unix_socket_directories={cls.folder}"
        cls.pg_ctl = [*cls.as_server, f"{binaries}/pg_ctl", "-D", data]
        subprocess.run(cls.pg_ctl + ["-o", options, "-l", os.path.join(cls.folder, "log"), "-w", "start"],
                       check=True, capture_output=True, timeout=120)
        cls.addClassCleanup(subprocess.run, cls.pg_ctl + ["-m", "immediate", "-w", "stop"], capture_output=True)
        cls.superuser(["-f", str(ROOT / INIT)], "postgres")

    @classmethod
    def superuser(cls, arguments, database):
        done = subprocess.run(["psql", "-h", cls.folder, "-p", str(cls.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                               "-X", "-q", "-tA", *arguments, database], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"psql {' '.join(arguments)} failed:\n{done.stderr}")
        return done.stdout.strip()

    def connect(self, url, database=None, query="SELECT current_user, current_database()"):
        """Connects over TCP with a container's URL, the server being this test's."""
        target = f"postgresql://{url.username}:{url.password}@127.0.0.1:{self.port}/{database or url.path.lstrip('/')}"
        return subprocess.run(["psql", "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", query, target],
                              capture_output=True, text=True, timeout=60)

    def test_each_container_connects_as_its_own_role_to_its_own_database(self):
        for host, component, url in database_urls():
            with self.subTest(host=host, component=component):
                done = self.connect(url)
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertEqual(done.stdout.strip(), f"{unquote(url.username)}|{url.path.lstrip('/')}")

    def test_each_role_is_unprivileged_and_owns_its_database(self):
        for host, component, url in database_urls():
            with self.subTest(host=host, component=component):
                role, database = url.username, url.path.lstrip("/")
                flags = self.superuser(["-c", "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                                              f"FROM pg_roles WHERE rolname = '{role}'"], "postgres")
                self.assertEqual(flags, "f|f|f|f|f")
                owner = self.superuser(["-c", f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'"],
                                       "postgres")
                self.assertEqual(owner, role)
                groups = self.superuser(["-c", "SELECT string_agg(g.rolname, ',') FROM pg_auth_members m "
                                               "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
                                               f"WHERE u.rolname = '{role}'"], "postgres")
                self.assertFalse(set(groups.split(",")) & set(PRIVILEGED_GROUPS), groups)

    def test_each_containers_sessions_have_the_limits_and_cannot_lift_temp_file_limit(self):
        names = list(ROLE_SETTINGS)
        for host, component, url in database_urls():
            with self.subTest(host=host, component=component):
                done = self.connect(url, query="SELECT " + ", ".join(f"current_setting('{n}')" for n in names))
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertEqual(dict(zip(names, done.stdout.strip().split("|"))), ROLE_SETTINGS)
                done = self.connect(url, query="SET temp_file_limit = -1")
                self.assertNotEqual(done.returncode, 0, "the role lifted its temp_file_limit")
                self.assertIn("permission denied", done.stderr)

    def test_no_role_connects_to_another_services_database(self):
        urls = [url for _, _, url in database_urls()]
        for url in urls:
            for other in urls:
                if other.path != url.path:
                    with self.subTest(role=url.username, database=other.path):
                        done = self.connect(url, other.path.lstrip("/"))
                        self.assertNotEqual(done.returncode, 0, done.stdout)
                        self.assertIn("permission denied", done.stderr)


if __name__ == "__main__":
    unittest.main()
