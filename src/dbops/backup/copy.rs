//! The byte path of a dump: copying `pg_dump`'s output to the file while hashing it, feeding
//! the streaming verifier, pipe sizing and early writeback. Blocking code, run on its own threads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};

/// Asks for a 1 MiB pipe (the unprivileged maximum by default), so `pg_dump` blocks less often.
pub(super) fn enlarge_pipe(fd: &OwnedFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a file descriptor we own; failure is harmless and ignored.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Starts writeback of a range already written, without waiting, so that dirty pages do not pile
/// up for the final fsync.
pub(super) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: sync_file_range on a file descriptor we own; it only schedules I/O.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

pub(super) const BUF_SIZE: usize = 1 << 20;

pub(super) const WRITEBACK_EVERY: u64 = 32 << 20;

/// The copy thread's side of the verifier feed: full chunks go out, emptied buffers come back.
pub(super) struct Feed {
    pub(super) tx: SyncSender<Vec<u8>>,
    pub(super) spare: Receiver<Vec<u8>>,
}

/// Writes every chunk from `rx` into the verifier's stdin and hands the buffer back; returns
/// when the channel closes (end of the dump) or when the verifier stops reading (a broken pipe:
/// then its exit status decides, and dropping `rx` tells the copy thread to stop sending).
pub(super) fn feed_sync(
    rx: Receiver<Vec<u8>>,
    spare: Sender<Vec<u8>>,
    stdin: OwnedFd,
) -> io::Result<()> {
    let mut out = File::from(stdin);
    for chunk in rx {
        match out.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e),
        }
        let _ = spare.send(chunk);
    }
    // Dropping `out` closes the pipe: end of input for the verifier.
    Ok(())
}

/// Copies `src` to `file` until end of input, hashing on the way and handing every chunk to
/// `feed` (when verifying), then fsyncs the file.
pub(super) fn copy_hash_sync(
    src: OwnedFd,
    mut file: File,
    written: &AtomicU64,
    mut feed: Option<Feed>,
) -> io::Result<(u64, [u8; 32])> {
    let mut src = File::from(src);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut flushed = 0u64;
    loop {
        // Fill at least half the buffer (or reach the end) before hashing and writing.
        let mut filled = 0;
        let mut eof = false;
        while filled < BUF_SIZE / 2 {
            match src.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled > 0 {
            hasher.update(&buf[..filled]);
            file.write_all(&buf[..filled])?;
            total += filled as u64;
            written.store(total, Ordering::Relaxed);
            if total - flushed >= WRITEBACK_EVERY {
                start_writeback(&file, flushed, total - flushed);
                flushed = total;
            }
            if let Some(f) = &feed {
                // The chunk moves to the feeder; a buffer it is done with (or a new one) replaces it.
                let mut next = f.spare.try_recv().unwrap_or_default();
                next.resize(BUF_SIZE, 0);
                let mut chunk = std::mem::replace(&mut buf, next);
                chunk.truncate(filled);
                if f.tx.send(chunk).is_err() {
                    // The verifier stopped reading; the dump goes on, its exit status decides.
                    feed = None;
                }
            }
        }
        if eof {
            break;
        }
    }
    // End of input for the verifier, which finishes while the file is synced.
    drop(feed);
    file.sync_all()?;
    Ok((total, hasher.finalize().into()))
}
