//! Whole reads of the small local files the node and the CLI take in one piece: the config,
//! the identity, a charter, the control API's address and token, the audit anchor, a
//! fetch's resume state.
//!
//! Each read is bounded and reads a regular file only: a path pointed at a huge file,
//! `/dev/zero` or a FIFO is refused, with the file's size and the limit, instead of hanging
//! or allocating without bound. The type is checked on the open handle (a file swapped
//! after the check on its path is still caught), and the read goes through
//! `Read::take(limit + 1)`, so a file that grows while it is read is refused too.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Why a local file was not read.
#[derive(Debug, thiserror::Error)]
pub enum LocalFileError {
    /// Opening or reading failed (`NotFound`: there is no file).
    #[error("{0}")]
    Io(#[source] io::Error),
    /// A directory, FIFO, socket or device where a file was expected.
    #[error("it is {kind}, not a regular file")]
    NotAFile {
        /// What is there instead (`a FIFO (named pipe)`).
        kind: &'static str,
    },
    /// More bytes than such a file may have.
    #[error("it is {size} bytes, more than the {limit} bytes allowed for this file")]
    TooLarge {
        /// Size of the file (at least `limit + 1`).
        size: u64,
        /// Largest size read.
        limit: u64,
    },
    /// The file is not UTF-8 text.
    #[error("it is not UTF-8 text")]
    NotText,
}

impl LocalFileError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, LocalFileError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads the regular file at `path` whole, if it has at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, LocalFileError> {
    // On the path first, so that a FIFO or a device is not even opened where the open
    // cannot be made non-blocking; the open handle is checked again below.
    check_regular(&std::fs::metadata(path).map_err(LocalFileError::Io)?)?;
    let file = open(path).map_err(LocalFileError::Io)?;
    let meta = file.metadata().map_err(LocalFileError::Io)?;
    check_regular(&meta)?;
    if meta.len() > limit {
        return Err(LocalFileError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    let mut file = file.take(limit.saturating_add(1));
    file.read_to_end(&mut bytes).map_err(LocalFileError::Io)?;
    if bytes.len() as u64 > limit {
        // Grown since the size was read.
        let now = file.get_ref().metadata().map_or(0, |m| m.len());
        return Err(LocalFileError::TooLarge {
            size: now.max(bytes.len() as u64),
            limit,
        });
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, limit: u64) -> Result<String, LocalFileError> {
    String::from_utf8(read(path, limit)?).map_err(|_| LocalFileError::NotText)
}

/// Opens `path` for reading. On Linux with `O_NONBLOCK`, so that a FIFO put in place after
/// the check on the path does not block the open until a writer comes (reads of a regular
/// file are not affected by the flag), and `O_NOCTTY`, so that a terminal is never taken
/// as the controlling one.
fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
        options.custom_flags(flags.bits() as i32);
    }
    options.open(path)
}

fn check_regular(meta: &Metadata) -> Result<(), LocalFileError> {
    let file_type = meta.file_type();
    if file_type.is_file() {
        return Ok(());
    }
    let kind = if file_type.is_dir() {
        "a directory"
    } else {
        special_kind(&file_type)
    };
    Err(LocalFileError::NotAFile { kind })
}

#[cfg(unix)]
fn special_kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// What `f` returns, run on another thread: a read that blocks fails the test after
    /// ten seconds instead of hanging it.
    pub(crate) fn without_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the read blocked")
    }

    #[test]
    fn a_file_within_the_limit_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read(&path, 10).unwrap(), b"0123456789");
        assert_eq!(read_to_string(&path, 64).unwrap(), "0123456789");
        std::fs::write(&path, b"").unwrap();
        assert!(read(&path, 0).unwrap().is_empty());
    }

    #[test]
    fn a_larger_file_is_refused_with_its_size_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large");
        std::fs::write(&path, vec![b'x'; 5000]).unwrap();
        let err = read(&path, 4096).unwrap_err();
        assert!(
            matches!(
                err,
                LocalFileError::TooLarge {
                    size: 5000,
                    limit: 4096
                }
            ),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(shown.contains("5000") && shown.contains("4096"), "{shown}");
        assert!(read(&path, 4999).is_err());
        assert_eq!(read(&path, 5000).unwrap().len(), 5000);
    }

    #[test]
    fn missing_and_not_text_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        assert!(read(&path, 10).unwrap_err().is_not_found());
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_to_string(&path, 10),
            Err(LocalFileError::NotText)
        ));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path(), 4096).unwrap_err();
        assert!(
            matches!(
                err,
                LocalFileError::NotAFile {
                    kind: "a directory"
                }
            ),
            "{err:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_device_is_refused_without_reading_it() {
        let err = without_blocking(|| read(Path::new("/dev/zero"), 4096)).unwrap_err();
        assert!(
            matches!(
                err,
                LocalFileError::NotAFile {
                    kind: "a character device"
                }
            ),
            "{err:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        make_fifo(&path);
        let err = without_blocking(move || read(&path, 4096)).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    /// Creates a FIFO at `path`.
    #[cfg(target_os = "linux")]
    pub(crate) fn make_fifo(path: &Path) {
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
    }
}
