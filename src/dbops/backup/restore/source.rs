//! The bytes a restore reads: the one open handle hashed on the way ([`HashingReader`]), and the
//! checked spool a plain `.sql` file goes through before psql sees it.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::RestoreError;

/// A reader that hashes (SHA-256) and counts every byte read through it.
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads (and hashes) the rest, for when the consumer stopped early: the hash then still
    /// covers the whole file.
    pub(super) fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// Size and lowercase-hex SHA-256 of everything read.
    pub(super) fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Plain `.sql` files go to psql as they are read, and psql runs each statement as it arrives:
/// a file swapped after approval could act (say, `ROLLBACK` then statements that commit on their
/// own) before the hash at its end is compared. So a plain file is first copied, through the one
/// open handle and hashed on the way, into a private unlinked spool file next to it, and psql
/// reads the spool only when the hash equals `expected`. (pg_restore's output needs no spool: it
/// is checked for its own closing `COMMIT`, and dualkey's `COMMIT` waits for the hash.)
pub(super) async fn spool_checked(
    head: Vec<u8>,
    file: std::fs::File,
    path: &Path,
    expected: &str,
) -> Result<std::fs::File, RestoreError> {
    let p = path.to_path_buf();
    let want = expected.trim().to_ascii_lowercase();
    let copied = tokio::task::spawn_blocking(move || -> Result<std::fs::File, RestoreError> {
        let io_err = |action, error| RestoreError::Io {
            action,
            path: p.clone(),
            error,
        };
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut spool = open_spool(dir).map_err(|e| io_err("create a spool file next to", e))?;
        let mut reader = HashingReader::new(io::Cursor::new(head).chain(file));
        io::copy(&mut reader, &mut spool).map_err(|e| io_err("spool", e))?;
        let (_, actual) = reader.finish();
        if actual != want {
            return Err(RestoreError::ChecksumMismatch {
                path: p.clone(),
                expected: want,
                actual,
            });
        }
        io::Seek::seek(&mut spool, io::SeekFrom::Start(0)).map_err(|e| io_err("spool", e))?;
        Ok(spool)
    })
    .await;
    copied.unwrap_or_else(|e| {
        Err(RestoreError::Io {
            action: "spool",
            path: path.to_path_buf(),
            error: io::Error::other(e.to_string()),
        })
    })
}

/// A read-write file in `dir` that has no name (Linux `O_TMPFILE`; elsewhere a new file that is
/// unlinked at once), so nothing else can open or change it.
fn open_spool(dir: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(target_os = "linux")]
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        return Ok(f);
    }
    let name = dir.join(format!(
        ".dualkey-restore-{}.spool",
        uuid::Uuid::new_v4().simple()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    let _ = std::fs::remove_file(&name);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_byte_read_also_after_the_consumer_stopped() {
        let data = b"PGDMP and the rest of an archive".repeat(1000);
        let mut file = io::Cursor::new(data.clone());
        let mut head = vec![0u8; 5];
        file.read_exact(&mut head).unwrap();
        let mut r = HashingReader::new(io::Cursor::new(head).chain(file));
        let mut first = [0u8; 100];
        r.read_exact(&mut first).unwrap();
        r.drain().unwrap();
        let (n, sha) = r.finish();
        assert_eq!(n, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
    }
}
