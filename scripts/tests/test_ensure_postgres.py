"""ensure_postgres (scripts/ensure.sh) against a fake Debian cluster: a pg_hba.conf in a temp
folder (PG_HBA_CONF), pg_ctlcluster a stub on PATH, as_root, port_open and apt_install shell
functions defined after ensure.sh is sourced; every call is recorded.

Run all of scripts/tests (standard library only, from the repository root):

    python3 -m unittest discover -s scripts/tests -v
"""

import os
import stat
import subprocess
import tempfile
import textwrap
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# pg_hba.conf as Debian 12's postgresql package writes it (comments shortened).
DEBIAN_HBA = textwrap.dedent(
    """\
    # Database administrative login by Unix domain socket
    local   all             postgres                                peer

    # TYPE  DATABASE        USER            ADDRESS                 METHOD
    local   all             all                                     peer
    # IPv4 local connections:
    host    all             all             127.0.0.1/32            scram-sha-256
    # IPv6 local connections:
    host    all             all             ::1/128                 scram-sha-256
    local   replication     all                                     peer
    host    replication     all             127.0.0.1/32            scram-sha-256
    host    replication     all             ::1/128                 scram-sha-256
    """
)

# As this machine's: local logins already trusted, no line for ::1.
TRUSTING_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"

# What the script runs: ensure.sh's own functions, with the root, port and package steps faked.
SCRIPT = r"""
set -euo pipefail
source "$ROOT/scripts/ensure.sh"
port_open() { [ "$1" = 5432 ] && [ -f "$FAKE/running" ]; }
as_root() { echo "as_root $*" >>"$FAKE/calls"; "$@"; }
apt_install() { echo "apt_install $*" >>"$FAKE/calls"; }
ensure_postgres
"""

PG_CTLCLUSTER = """#!/bin/sh
echo "pg_ctlcluster $*" >>"$FAKE/calls"
case " $* " in *" start "*) touch "$FAKE/running" ;; esac
"""


class FakeCluster:
    """A Debian-shaped cluster folder (<dir>/15/main/pg_hba.conf) and the stubs that record."""

    def __init__(self, hba_text, running):
        self._dir = tempfile.TemporaryDirectory()
        self.root = Path(self._dir.name)
        self.hba = self.root / "15" / "main" / "pg_hba.conf"
        self.hba.parent.mkdir(parents=True)
        self.hba.write_text(hba_text)
        self.hba.chmod(0o640)
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        stub = bin_dir / "pg_ctlcluster"
        stub.write_text(PG_CTLCLUSTER)
        stub.chmod(0o755)
        if running:
            (self.root / "running").touch()
        (self.root / "calls").touch()

    def ensure_postgres(self):
        env = dict(
            os.environ,
            ROOT=str(ROOT),
            FAKE=str(self.root),
            PG_HBA_CONF=str(self.hba),
            PATH=f"{self.root / 'bin'}:{os.environ['PATH']}",
        )
        return subprocess.run(
            ["bash", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
        )

    def calls(self):
        return (self.root / "calls").read_text().splitlines()

    def pg_ctlcluster_calls(self):
        return [c for c in self.calls() if c.startswith("pg_ctlcluster ")]

    def forget_calls(self):
        (self.root / "calls").write_text("")

    def host_all_all_lines(self):
        return [l.split() for l in self.hba.read_text().splitlines() if l.split()[:3] == ["host", "all", "all"]]

    def close(self):
        self._dir.cleanup()


class EnsurePostgresTest(unittest.TestCase):
    def cluster(self, hba_text, running):
        cluster = FakeCluster(hba_text, running)
        self.addCleanup(cluster.close)
        return cluster

    def test_a_server_the_package_started_is_made_to_trust_local_logins_and_reloaded_once(self):
        cluster = self.cluster(DEBIAN_HBA, running=True)

        run = cluster.ensure_postgres()

        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(
            cluster.host_all_all_lines(),
            [
                ["host", "all", "all", "127.0.0.1/32", "trust"],
                ["host", "all", "all", "::1/128", "trust"],
            ],
        )
        self.assertEqual(
            cluster.pg_ctlcluster_calls(), ["pg_ctlcluster --skip-systemctl-redirect 15 main reload"]
        )
        self.assertIn("host    replication     all             127.0.0.1/32            scram-sha-256",
                      cluster.hba.read_text(), "replication lines are left alone")
        self.assertEqual(stat.S_IMODE(cluster.hba.stat().st_mode), 0o640, "written in place")

    def test_a_second_run_changes_nothing_says_nothing_and_does_not_reload(self):
        cluster = self.cluster(DEBIAN_HBA, running=True)
        self.assertEqual(cluster.ensure_postgres().returncode, 0)
        trusted = cluster.hba.read_text()
        cluster.forget_calls()

        run = cluster.ensure_postgres()

        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(cluster.hba.read_text(), trusted)
        self.assertEqual(cluster.calls(), [], "no reload, no write")
        self.assertEqual(run.stderr, "")

    def test_a_file_that_already_trusts_local_logins_is_left_alone(self):
        cluster = self.cluster(TRUSTING_HBA, running=True)

        run = cluster.ensure_postgres()

        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(cluster.hba.read_text(), TRUSTING_HBA)
        self.assertEqual(cluster.calls(), [])
        self.assertEqual(run.stderr, "")

    def test_a_stopped_server_is_made_to_trust_and_started_not_reloaded(self):
        cluster = self.cluster(DEBIAN_HBA, running=False)

        run = cluster.ensure_postgres()

        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual({line[4] for line in cluster.host_all_all_lines()}, {"trust"})
        self.assertEqual(
            cluster.pg_ctlcluster_calls(), ["pg_ctlcluster --skip-systemctl-redirect 15 main start"]
        )
        self.assertNotIn("apt_install postgresql", cluster.calls(), "the package is there")

    def test_a_file_without_a_line_for_127_0_0_1_gets_one_that_trusts(self):
        cluster = self.cluster("local all all peer\n", running=True)

        run = cluster.ensure_postgres()

        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(cluster.host_all_all_lines(), [["host", "all", "all", "127.0.0.1/32", "trust"]])
        self.assertTrue(cluster.hba.read_text().startswith("local all all peer\n"))
        self.assertEqual(len(cluster.pg_ctlcluster_calls()), 1)

    def test_a_method_with_options_loses_them_with_its_method(self):
        cluster = self.cluster("host all all 127.0.0.1/32 ldap ldapserver=ldap.example.com\n", running=True)

        run = cluster.ensure_postgres()

        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(cluster.host_all_all_lines(), [["host", "all", "all", "127.0.0.1/32", "trust"]])

    def test_a_pg_hba_conf_that_cannot_be_read_is_an_error_and_nothing_is_written(self):
        cluster = self.cluster(DEBIAN_HBA, running=True)
        cluster.hba.unlink()

        run = cluster.ensure_postgres()

        self.assertNotEqual(run.returncode, 0)
        self.assertIn("could not read or write", run.stderr)
        self.assertFalse(cluster.hba.exists())
        self.assertEqual(cluster.pg_ctlcluster_calls(), [])


if __name__ == "__main__":
    unittest.main()
