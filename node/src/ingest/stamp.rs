//! The stamp of an input file ([`InputStamp`]): taken when ingest opens the file and compared
//! after its last read, so that a file that changed while it was read is refused.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::error::{IngestError, io_error};

/// What the file system says about an input file, taken when ingest opens it and again after
/// its last read: when any part differs, the file changed (or was replaced) while it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InputStamp {
    /// Length in bytes: grows while a writer appends.
    len: u64,
    /// Last modification time, where the platform reports one: moves on every write.
    modified: Option<SystemTime>,
    /// Status change time (Unix) in seconds and nanoseconds: a writer can set the modification
    /// time back (`cp -p`, `touch -r`), not this.
    status_changed: Option<(i64, i64)>,
    /// Device and inode (Unix): another file renamed over the path has other ones.
    identity: Option<(u64, u64)>,
}

impl InputStamp {
    #[cfg(unix)]
    pub(super) fn of(metadata: &fs::Metadata) -> InputStamp {
        use std::os::unix::fs::MetadataExt;
        InputStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            status_changed: Some((metadata.ctime(), metadata.ctime_nsec())),
            identity: Some((metadata.dev(), metadata.ino())),
        }
    }

    #[cfg(not(unix))]
    pub(super) fn of(metadata: &fs::Metadata) -> InputStamp {
        InputStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            status_changed: None,
            identity: None,
        }
    }
}

/// How an input file changed while it was read ([`IngestError::Changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputChange {
    /// Its path no longer names a file.
    Removed,
    /// Another file was put at its path (it has another device or inode).
    Replaced,
    /// Its length changed.
    Resized {
        /// Length in bytes when it was opened.
        before: u64,
        /// Length in bytes after the last read.
        after: u64,
    },
    /// Same length, but it was written to (its modification or status change time moved).
    Modified,
}

impl fmt::Display for InputChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputChange::Removed => f.write_str("it was removed"),
            InputChange::Replaced => f.write_str("another file was put in its place"),
            InputChange::Resized { before, after } => {
                write!(f, "its size went from {before} to {after} bytes")
            }
            InputChange::Modified => f.write_str("it was written to"),
        }
    }
}

/// How the file stamped `before` differs from what its path names now (`after`, `None` when
/// nothing): `None` when it is the same file, unchanged.
fn input_change(before: &InputStamp, after: Option<&InputStamp>) -> Option<InputChange> {
    let Some(after) = after else {
        return Some(InputChange::Removed);
    };
    if before.identity != after.identity {
        Some(InputChange::Replaced)
    } else if before.len != after.len {
        Some(InputChange::Resized {
            before: before.len,
            after: after.len,
        })
    } else if before.modified != after.modified || before.status_changed != after.status_changed {
        Some(InputChange::Modified)
    } else {
        None
    }
}

/// Fails with [`IngestError::Changed`] when the file at `input` is not the one stamped `stamp`,
/// unchanged.
pub(super) fn check_unchanged(input: &Path, stamp: &InputStamp) -> Result<(), IngestError> {
    let now = match fs::metadata(input) {
        Ok(metadata) => Some(InputStamp::of(&metadata)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(input, "read", error)),
    };
    match input_change(stamp, now.as_ref()) {
        None => Ok(()),
        Some(change) => Err(IngestError::Changed {
            file: input.to_path_buf(),
            change,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diskroom::Room;

    use std::fs::File;
    use std::io::Write;

    use arrow::ipc::writer::{FileWriter, StreamWriter};
    use parquet::arrow::ArrowWriter;

    use crate::ingest::test_support::{sample_batch, write_input};
    use crate::ingest::{CsvOptions, InputFormat, Opened, ingest_opened};

    #[test]
    fn input_change_compares_every_part_of_the_stamp() {
        use InputChange::*;
        let opened_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let later = opened_at + std::time::Duration::from_millis(4);
        let before = InputStamp {
            len: 100,
            modified: Some(opened_at),
            status_changed: Some((1_700_000_000, 0)),
            identity: Some((1, 42)),
        };
        let cases: [(&str, Option<InputStamp>, Option<InputChange>); 10] = [
            ("unchanged", Some(before), None),
            ("removed", None, Some(Removed)),
            (
                "renamed over, same length and times",
                Some(InputStamp {
                    identity: Some((1, 43)),
                    ..before
                }),
                Some(Replaced),
            ),
            (
                "on another device",
                Some(InputStamp {
                    identity: Some((2, 42)),
                    ..before
                }),
                Some(Replaced),
            ),
            (
                "renamed over, longer",
                Some(InputStamp {
                    len: 200,
                    identity: Some((1, 43)),
                    ..before
                }),
                Some(Replaced),
            ),
            (
                "appended to",
                Some(InputStamp {
                    len: 120,
                    modified: Some(later),
                    status_changed: Some((1_700_000_000, 4_000_000)),
                    ..before
                }),
                Some(Resized {
                    before: 100,
                    after: 120,
                }),
            ),
            (
                "truncated",
                Some(InputStamp { len: 0, ..before }),
                Some(Resized {
                    before: 100,
                    after: 0,
                }),
            ),
            (
                "rewritten in place, same length",
                Some(InputStamp {
                    modified: Some(later),
                    ..before
                }),
                Some(Modified),
            ),
            (
                "rewritten with its modification time set back",
                Some(InputStamp {
                    status_changed: Some((1_700_000_001, 0)),
                    ..before
                }),
                Some(Modified),
            ),
            (
                "modification time no longer reported",
                Some(InputStamp {
                    modified: None,
                    ..before
                }),
                Some(Modified),
            ),
        ];
        for (what, after, want) in cases {
            assert_eq!(input_change(&before, after.as_ref()), want, "{what}");
        }
        // Where the platform reports neither inodes nor status change times.
        let bare = InputStamp {
            identity: None,
            status_changed: None,
            ..before
        };
        let written = InputStamp {
            modified: Some(later),
            ..bare
        };
        assert_eq!(input_change(&bare, Some(&bare)), None);
        assert_eq!(input_change(&bare, Some(&written)), Some(Modified));

        let words = [
            (Removed, "it was removed"),
            (Replaced, "another file was put in its place"),
            (
                Resized {
                    before: 100,
                    after: 120,
                },
                "its size went from 100 to 120 bytes",
            ),
            (Modified, "it was written to"),
        ];
        for (change, want) in words {
            assert_eq!(change.to_string(), want);
        }
    }

    /// Opens `input` as [`ingest_file_tracked`] does, stamp included.
    fn open_input(input: &Path) -> Opened {
        let file = File::open(input).unwrap();
        let stamp = InputStamp::of(&file.metadata().unwrap());
        Opened {
            file,
            stamp,
            format: InputFormat::detect(input).unwrap(),
        }
    }

    /// How a test input changes after it was opened.
    #[derive(Debug, Clone, Copy)]
    enum Mutation {
        /// A writer appends these bytes.
        Append(&'static [u8]),
        /// Same bytes, but the modification time is set (to a time long past).
        Touch,
        /// A copy of it is renamed over its path (Unix: the inode changes).
        #[cfg(unix)]
        Replace,
    }

    impl Mutation {
        /// Changes `path`, `len` bytes long, and returns the change ingest should report.
        fn apply(self, path: &Path, len: u64) -> InputChange {
            match self {
                Mutation::Append(bytes) => {
                    let mut file = File::options().append(true).open(path).unwrap();
                    file.write_all(bytes).unwrap();
                    InputChange::Resized {
                        before: len,
                        after: len + bytes.len() as u64,
                    }
                }
                Mutation::Touch => {
                    let past = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
                    let file = File::options().append(true).open(path).unwrap();
                    file.set_modified(past).unwrap();
                    InputChange::Modified
                }
                #[cfg(unix)]
                Mutation::Replace => {
                    let copy = path.with_extension("copy");
                    fs::copy(path, &copy).unwrap();
                    fs::rename(&copy, path).unwrap();
                    InputChange::Replaced
                }
            }
        }
    }

    /// The input is changed after it was opened and before ingest reads it: whichever format,
    /// and whether the read itself succeeds or not, ingest reports the change and removes the
    /// output. Each input unchanged goes through first, so that the change is what fails.
    #[test]
    fn an_input_that_changes_while_it_is_read_is_refused_and_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample_batch();
        let mut parquet = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut parquet, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let mut arrow_file = Vec::new();
        let mut writer = FileWriter::try_new(&mut arrow_file, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let mut arrow_stream = Vec::new();
        let mut writer = StreamWriter::try_new(&mut arrow_stream, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();

        let mut cases: Vec<(&str, Vec<u8>, Mutation)> = vec![
            // A writer still appending: `3,12345` cut to `3,12` still parses.
            (
                "appended.csv",
                b"id,n\n1,10\n2,20\n".to_vec(),
                Mutation::Append(b"3,12"),
            ),
            // A row cut to one field: the read fails, and the change is what is reported.
            ("cut.csv", b"a,b\n1,2\n".to_vec(), Mutation::Append(b"3")),
            ("touched.csv", b"a,b\n1,2\n".to_vec(), Mutation::Touch),
            ("touched.parquet", parquet, Mutation::Touch),
            ("touched.arrow", arrow_file, Mutation::Touch),
            ("touched.arrows", arrow_stream, Mutation::Touch),
        ];
        #[cfg(unix)]
        cases.push(("replaced.csv", b"a,b\n1,2\n".to_vec(), Mutation::Replace));

        let options = CsvOptions::default();
        let output = dir.path().join("changing.arrow.partial");
        for (name, bytes, mutation) in cases {
            let input = write_input(&dir, name, &bytes);
            ingest_opened(
                &input,
                open_input(&input),
                &output,
                &options,
                None,
                Room::default(),
            )
            .unwrap_or_else(|e| panic!("{name} unchanged: {e}"));
            fs::remove_file(&output).unwrap();

            let opened = open_input(&input);
            let want = mutation.apply(&input, bytes.len() as u64);
            let error = ingest_opened(&input, opened, &output, &options, None, Room::default())
                .unwrap_err();
            match &error {
                IngestError::Changed { file, change } => {
                    assert_eq!((file, *change), (&input, want), "{name}");
                }
                other => panic!("{name}: expected Changed, got {other:?}"),
            }
            assert_eq!(
                error.to_string(),
                format!(
                    "input file `{}` changed while it was read ({want}): publish it again once \
                     it is complete and nothing writes to it any more",
                    input.display()
                ),
                "{name}"
            );
            assert!(!output.exists(), "{name}");
        }
    }
}
