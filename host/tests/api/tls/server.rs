//! TLS servers of one test's own: a PostgreSQL server from the machine's installation with TLS
//! on and plain TCP refused, and a TLS front for the shared RabbitMQ.
//!
//! The PostgreSQL server is a cluster of its own (initdb into a temporary folder, a free port),
//! so turning TLS on touches nothing other tests use; it is stopped and removed on drop. As root
//! its programs run as the `postgres` user, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::pki::Authority;

pub struct TlsPostgres {
    pub port: u16,
    /// The CA that signed the server's certificate (made out to `localhost` only).
    pub ca: Authority,
    /// A CA that signed nothing the server has.
    pub other_ca: Authority,
    dir: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl TlsPostgres {
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("the server setup panicked")
    }

    fn start_blocking() -> Self {
        let bin = server_programs();
        let dir = std::env::temp_dir().join(format!("pg-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("the server's folder");
        let (ca, other_ca) = (
            Authority::new(&dir, "test-ca"),
            Authority::new(&dir, "other-ca"),
        );
        let (cert, key) = ca.server(&["localhost"]);
        std::fs::write(dir.join("server.crt"), cert).expect("write the certificate");
        std::fs::write(dir.join("server.key"), key).expect("write the key");
        set_mode(&dir.join("server.key"), 0o600);
        let owner = rustix::process::geteuid().is_root().then(postgres_user);
        let mut server = Self {
            port: 0,
            ca,
            other_ca,
            dir,
            bin,
            owner,
        };
        server.chown_all();
        let data = server.dir.join("data");
        server
            .run(
                "initdb",
                &[
                    "-D",
                    path(&data),
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
            )
            .expect("initdb");
        // TLS or nothing over TCP: a connection that does not use it is refused.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n",
        )
        .expect("write pg_hba.conf");
        // A free port, which another process may take before the server does: then another.
        let mut attempts = 0;
        loop {
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let options = format!(
                "-p {port} -c listen_addresses=localhost -c unix_socket_directories={dir} \
                 -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key \
                 -c fsync=off -c shared_buffers=16MB -c max_connections=50",
                port = server.port,
                dir = server.dir.display(),
            );
            let log = server.dir.join("server.log");
            match server.run(
                "pg_ctl",
                &[
                    "-D",
                    path(&data),
                    "-l",
                    path(&log),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => return server,
                Err(why) if attempts < 3 && why.contains("in use") => attempts += 1,
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// A URL of database `database` on this server as `postgres`, reached at `host`, with
    /// `query` after the `?`.
    pub fn url(&self, host: &str, database: &str, query: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/{database}?{query}",
            self.port
        )
    }

    /// `sslmode=verify-full` with this server's CA: the URL a careful host uses.
    pub fn verified_url(&self, database: &str) -> String {
        self.url(
            "localhost",
            database,
            &format!("sslmode=verify-full&sslrootcert={}", self.ca.file.display()),
        )
    }

    /// `program` of the server's installation, run as `postgres` when this process is root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.owner {
            Some(_) => {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let output = self
            .command(program)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run a PostgreSQL program");
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        ))
    }

    fn chown_all(&self) {
        let Some((uid, gid)) = self.owner else { return };
        let entries = std::fs::read_dir(&self.dir)
            .expect("list the folder")
            .flatten()
            .map(|entry| entry.path());
        for entry in std::iter::once(self.dir.clone()).chain(entries) {
            std::os::unix::fs::chown(&entry, Some(uid), Some(gid))
                .expect("hand the file to postgres");
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if let Err(why) = self.run(
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        ) {
            eprintln!("could not stop the test's PostgreSQL server: {why}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn set_mode(file: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
        .expect("set the key's mode");
}

/// The newest installed PostgreSQL's programs (`TEST_POSTGRES_BIN` names another folder).
fn server_programs() -> PathBuf {
    if let Some(dir) = std::env::var_os("TEST_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            Some((
                entry.file_name().to_str()?.parse().ok()?,
                entry.path().join("bin"),
            ))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "no PostgreSQL server programs in /usr/lib/postgresql/<version>/bin: install the \
         postgresql package (./test.sh does), or set TEST_POSTGRES_BIN",
    )
}

fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("the postgres user exists")
    };
    (id("-u"), id("-g"))
}

/// A TLS front for a plain TCP server (the shared RabbitMQ): `amqps://localhost:<port>`, with
/// a certificate for `localhost` from `ca`.
pub struct TlsFront {
    pub port: u16,
    accepting: JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(ca: &Authority, upstream: String) -> Self {
        let (cert, key) = ca.server(&["localhost"]);
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate");
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server configuration");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the TLS front");
        let port = listener.local_addr().expect("address").port();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self { port, accepting }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
