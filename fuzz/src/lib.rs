//! What the fuzz targets share: turning libFuzzer's bytes into the inputs the library takes,
//! the fixed keys and secrets the targets use, and running a future that does no IO.
//!
//! The input formats are plain text so that the seeds are the repository's own examples and a
//! crash file can be read and edited by hand (see docs/fuzzing.md).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ritmo::crypto::{MasterKey, MasterKeyring};
use ritmo::manifest::{FileContent, SourceFile};

/// The examples' master key (README): ciphertexts in examples/ritmo-config decrypt under it.
pub const EXAMPLE_MASTER_KEY: &str = "ritmo-example-master-key-32bytes";
/// An older key, so decryption and re-encryption walk a ring of two.
pub const OLD_MASTER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

/// A ring of the old key and the examples' key (current).
pub fn keyring() -> MasterKeyring {
    let key = |text| MasterKey::parse(text).unwrap_or_else(|_| unreachable!("fixed test key"));
    MasterKeyring::new(vec![
        ("old".to_owned(), key(OLD_MASTER_KEY)),
        ("example".to_owned(), key(EXAMPLE_MASTER_KEY)),
    ])
    .unwrap_or_else(|_| unreachable!("fixed test ring"))
}

/// Polls `future` to completion without a runtime. Only for futures that never wait on IO (the
/// crypto calls without a KMS client): one that returns `Pending` is a bug of the target.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a future of the fuzz target waited on IO"),
    }
}

/// Where the manifest target puts text that comes before any `#@ ` line.
pub const DEFAULT_MANIFEST_PATH: &str = "jobs/fuzz.yaml";

/// Files of a config repository from one input: a line `#@ <path>` starts a file (a YAML
/// comment, so a seed is still valid YAML); text before the first such line is
/// [`DEFAULT_MANIFEST_PATH`]. A path may end in ` !symlink`, ` !submodule`, ` !nonregular` or
/// ` !toolarge` to stand for what a source reports instead of bytes.
pub fn manifest_files(data: &[u8]) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut path = DEFAULT_MANIFEST_PATH.to_owned();
    let mut content: Vec<u8> = Vec::new();
    let mut special: Option<FileContent> = None;
    let mut started = false;
    let flush = |path: &str,
                 content: Vec<u8>,
                 special: Option<FileContent>,
                 files: &mut Vec<SourceFile>| {
        files.push(SourceFile {
            path: path.to_owned(),
            content: special.unwrap_or(FileContent::Bytes(content)),
        });
    };
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"#@ ") {
            if started || !content.is_empty() {
                flush(
                    &path,
                    std::mem::take(&mut content),
                    special.take(),
                    &mut files,
                );
            }
            started = true;
            let text = String::from_utf8_lossy(rest);
            let text = text.trim_end_matches(['\n', '\r']);
            let (name, marker) = match text.rsplit_once(" !") {
                Some((name, marker)) => (name, Some(marker)),
                None => (text, None),
            };
            special = match marker {
                Some("symlink") => Some(FileContent::Symlink),
                Some("submodule") => Some(FileContent::Submodule),
                Some("nonregular") => Some(FileContent::NonRegular),
                Some("toolarge") => Some(FileContent::TooLarge { size: 2 << 20 }),
                _ => None,
            };
            path = if special.is_some() { name } else { text }.to_owned();
        } else {
            content.extend_from_slice(line);
        }
    }
    if started || !content.is_empty() {
        flush(&path, content, special, &mut files);
    }
    files
}

/// Headers and body of a webhook request from one input: `Name: value` lines, an empty line,
/// then the body's raw bytes. Header lines that are not UTF-8 or have no `:` are dropped, as
/// the HTTP adapters drop headers that are not UTF-8.
pub fn http_request(data: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let mut headers = Vec::new();
    let mut rest = data;
    loop {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return (headers, after);
        }
        if let Ok(text) = std::str::from_utf8(line)
            && let Some((name, value)) = text.split_once(':')
        {
            headers.push((name.trim().to_owned(), value.trim_start().to_owned()));
        }
        if after.is_empty() {
            return (headers, after);
        }
        rest = after;
    }
}

/// The lines `#env NAME=value` of a bootstrap file (YAML comments, so a seed stays valid), as
/// the fixed environment the config target reads instead of the process's.
pub fn env_lines(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("#env "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_split_at_path_lines_and_text_before_them_is_the_default_file() {
        let files = manifest_files(b"a: 1\n#@ plugins/p.yaml\nb: 2\n#@ jobs !symlink\n");

        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [DEFAULT_MANIFEST_PATH, "plugins/p.yaml", "jobs"]);
        assert_eq!(files[1].content, FileContent::Bytes(b"b: 2\n".to_vec()));
        assert_eq!(files[2].content, FileContent::Symlink);
    }

    #[test]
    fn headers_end_at_the_first_empty_line() {
        let (headers, body) = http_request(b"X-GitHub-Event: push\r\nbad line\n\n{\"a\":1}\n");

        assert_eq!(headers, [("X-GitHub-Event".to_owned(), "push".to_owned())]);
        assert_eq!(body, b"{\"a\":1}\n");
    }

    #[test]
    fn the_fixed_ring_decrypts_the_examples_values() {
        let value = "AES256:RWVXif75CZJo7pzhHczSFOgHQ3//ig4zkYVtM/abcKPIcAfwoz9vO49Dd9zPxSUS";

        let decrypted = keyring().decrypt(Some("docker-registry"), value).unwrap();

        assert!(decrypted.bound);
    }
}
