//! ssh remotes: gix runs an ssh client program; this module decides which one and with what
//! options, and puts the private key where that program can read it and nobody else can.
//!
//! Per operation, the key is written to a 0600 file inside a fresh 0700 temporary directory
//! (removed when the operation ends) and the client is run as
//! `PROGRAM -i KEY -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes …`:
//! only that key is offered, nothing ever prompts, and an unknown or changed host key fails the
//! connection. Host keys are checked against the configured `known_hosts` when given (and only
//! against it); when not given, against the client's own files (`~/.ssh/known_hosts`,
//! `/etc/ssh/ssh_known_hosts`), which in Lambda do not exist, so every host is unknown there.
//!
//! gix passes such a command line to `sh -c` (what git does with `core.sshCommand`), so the
//! image needs `/bin/sh` as well as the client. Does not read the key (that is
//! [`SecretSource`]) nor talk the git protocol (gix does).

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use super::credentials::SecretSource;

/// The ssh host keys to trust, in `known_hosts` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownHosts {
    Text(String),
    File(PathBuf),
}

/// How to authenticate to an ssh remote. `Debug` never shows the key.
#[derive(Clone, Default)]
pub struct SshAuth {
    /// The private key (OpenSSH or PEM format); `None` lets the client pick its own.
    pub key: Option<SecretSource>,
    /// Host keys to trust; `None` leaves it to the client's own files.
    pub known_hosts: Option<KnownHosts>,
    /// The client to run; `ssh` on `PATH` when `None`.
    pub program: Option<PathBuf>,
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshAuth")
            .field("key", &self.key)
            .field(
                "known_hosts",
                &match &self.known_hosts {
                    None => "client defaults".to_string(),
                    Some(KnownHosts::Text(text)) => format!("{} lines", text.lines().count()),
                    Some(KnownHosts::File(path)) => path.display().to_string(),
                },
            )
            .field("program", &self.program)
            .finish()
    }
}

/// The ssh client command of one operation, with the key file it names. The directory and
/// the key in it are removed on drop.
pub(crate) struct SshSession {
    command: OsString,
    _dir: Option<tempfile::TempDir>,
}

impl SshSession {
    /// Writes the key (and known hosts given as text) into a private temporary directory and
    /// builds the command line. The error is secret-free.
    pub(crate) fn prepare(auth: &SshAuth, program: &Path) -> Result<SshSession, String> {
        let needs_dir = auth.key.is_some() || matches!(auth.known_hosts, Some(KnownHosts::Text(_)));
        let dir = if needs_dir {
            Some(
                tempfile::Builder::new()
                    .prefix("ritmo-ssh-")
                    // Created with this mode, not chmod-ed after: never readable by others.
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir()
                    .map_err(|err| {
                        format!("cannot create a private directory for the ssh key: {err}")
                    })?,
            )
        } else {
            None
        };
        let mut args: Vec<String> = Vec::new();
        if let (Some(source), Some(dir)) = (&auth.key, &dir) {
            let key = source
                .read()
                .map_err(|reason| format!("cannot read the ssh key: {reason}"))?;
            let path = dir.path().join("key");
            let mut text = key.expose_secret().trim().to_string();
            // OpenSSH refuses a private key file without its final newline.
            text.push('\n');
            write_private(&path, text.as_bytes())
                .map_err(|err| format!("cannot write the ssh key file: {err}"))?;
            zeroize::Zeroize::zeroize(&mut text);
            args.extend([
                "-i".into(),
                quote(&path)?,
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        args.extend([
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
        ]);
        let known_hosts = match (&auth.known_hosts, &dir) {
            (Some(KnownHosts::Text(text)), Some(dir)) => {
                let path = dir.path().join("known_hosts");
                let mut text = text.trim().to_string();
                text.push('\n');
                write_private(&path, text.as_bytes())
                    .map_err(|err| format!("cannot write the known_hosts file: {err}"))?;
                Some(path)
            }
            (Some(KnownHosts::File(path)), _) => Some(path.clone()),
            _ => None,
        };
        if let Some(path) = known_hosts {
            args.extend([
                "-o".into(),
                format!("UserKnownHostsFile={}", quote(&path)?),
                "-o".into(),
                "GlobalKnownHostsFile=/dev/null".into(),
            ]);
        }
        let mut command = quote(program)?;
        for arg in args {
            command.push(' ');
            command.push_str(&arg);
        }
        Ok(SshSession {
            command: command.into(),
            _dir: dir,
        })
    }

    /// The command line gix hands to `sh -c` (followed by its own arguments: `-o
    /// SendEnv=GIT_PROTOCOL`, the port, `user@host`, `git-upload-pack 'path'`).
    pub(crate) fn command(&self) -> &OsString {
        &self.command
    }
}

/// The ssh client `auth` names, found on disk (a bare name on `PATH`), so that a missing client
/// is reported as such rather than as a connection the server hung up.
pub(crate) fn find_program(auth: &SshAuth) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;

    let program = auth.program.clone().unwrap_or_else(|| PathBuf::from("ssh"));
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    let found = if program.components().count() > 1 {
        executable(&program).then(|| program.clone())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(&program))
                .find(|candidate| executable(candidate))
        })
    };
    found.ok_or_else(|| {
        format!(
            "the ssh client `{}` is not installed (or not executable): the Lambda image has \
             none, ship one in a layer and set ssh_program (see infra/README.md)",
            program.display()
        )
    })
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

/// A path as one shell word.
fn quote(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("path `{}` is not UTF-8", path.display()))?;
    Ok(format!("'{}'", text.replace('\'', r"'\''")))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use secrecy::SecretString;

    use super::*;

    #[test]
    fn the_key_lands_in_a_private_file_named_by_the_command() {
        let auth = SshAuth {
            key: Some(SecretSource::Value(SecretString::from("KEY-MATERIAL"))),
            known_hosts: Some(KnownHosts::Text("example.com ssh-ed25519 AAAA".into())),
            program: Some(PathBuf::from("/opt/bin/ssh")),
        };

        let session = SshSession::prepare(&auth, Path::new("/opt/bin/ssh")).unwrap();

        let command = session.command().to_str().unwrap().to_string();
        let dir = session._dir.as_ref().unwrap().path().to_path_buf();
        let key = dir.join("key");
        assert!(command.starts_with("'/opt/bin/ssh' -i '"), "{command}");
        for option in [
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=/dev/null",
        ] {
            assert!(command.contains(option), "{command}");
        }
        assert!(!command.contains("KEY-MATERIAL"), "{command}");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "KEY-MATERIAL\n");
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir), 0o700);
        drop(session);
        assert!(!dir.exists());
    }

    #[test]
    fn without_known_hosts_the_client_checks_its_own_files_strictly() {
        let session = SshSession::prepare(&SshAuth::default(), Path::new("ssh")).unwrap();

        let command = session.command().to_str().unwrap();

        assert_eq!(
            command,
            "'ssh' -o BatchMode=yes -o StrictHostKeyChecking=yes"
        );
    }

    #[test]
    fn a_missing_client_is_named_with_what_to_ship() {
        let auth = SshAuth {
            program: Some(PathBuf::from("/nonexistent/bin/ssh")),
            ..SshAuth::default()
        };

        let err = find_program(&auth).unwrap_err();

        assert!(err.contains("/nonexistent/bin/ssh"), "{err}");
        assert!(err.contains("infra/README.md"), "{err}");
    }

    #[test]
    fn debug_shows_where_the_key_comes_from_but_not_the_key() {
        let auth = SshAuth {
            key: Some(SecretSource::Value(SecretString::from("KEY-MATERIAL"))),
            ..SshAuth::default()
        };

        let shown = format!("{auth:?}");

        assert!(!shown.contains("KEY-MATERIAL"), "{shown}");
    }
}
