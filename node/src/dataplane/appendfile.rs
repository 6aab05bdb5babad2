//! Appending a large file that is written once and forced to disk, without the page cache.
//!
//! A fetch writes every byte of a product once and then fsyncs it: the page cache buys it
//! nothing, yet a buffered `write` copies each byte into freshly allocated cache pages, which
//! was the largest single cost of the consumer (docs/ARCHITECTURE.md, "Writing the fetched
//! file, reading quinn's chunks"). [`AppendFile`] stages appended bytes in one reused,
//! 4 KiB-aligned buffer and writes it with `O_DIRECT` in whole aligned blocks.
//! [`AppendFile::flush`] writes the unaligned tail as one more block padded with zeros and
//! then cuts the file back to its true length, so the file on disk always ends with the last
//! byte appended.
//!
//! Bytes that the caller placed in memory at the alignment of their offset in the file
//! (see [`lead_for`]) skip the stage: their whole blocks are written from where they are,
//! and only the partial blocks at either end are staged.
//!
//! Where the file system refuses direct I/O (or off Linux), the file is written through the
//! page cache as before; nothing else changes.

use std::fs::File;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::FileExt;

/// Alignment of direct I/O: file offsets, lengths and memory. 4 KiB covers devices with
/// 512-byte and 4 KiB logical blocks.
const ALIGN: usize = 4096;
/// Bytes staged before a direct write: large enough for few system calls, small enough to
/// stay in cache while it fills.
const STAGE: usize = 8 * 1024 * 1024;

/// A buffer whose usable part starts on an [`ALIGN`] boundary (no allocator with alignment
/// needed: the slack in front is skipped).
struct Stage {
    memory: Vec<u8>,
    /// Where the aligned part starts in `memory`.
    start: usize,
    /// Bytes staged.
    len: usize,
}

impl Stage {
    fn new() -> Self {
        let memory = vec![0u8; STAGE + ALIGN];
        let start = memory.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a byte buffer can always be aligned");
        Self {
            memory,
            start,
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.memory[self.start..self.start + self.len]
    }

    /// The staged bytes padded with zeros to whole blocks.
    fn padded(&mut self) -> &[u8] {
        let end = self.len.next_multiple_of(ALIGN);
        self.memory[self.start + self.len..self.start + end].fill(0);
        &self.memory[self.start..self.start + end]
    }

    /// Copies as much of `bytes` as fits; returns how much.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(STAGE - self.len);
        let at = self.start + self.len;
        self.memory[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    /// Drops the whole blocks in front, keeping the partial block that follows them.
    fn keep_partial_block(&mut self) -> usize {
        let whole = self.len / ALIGN * ALIGN;
        let s = self.start;
        self.memory.copy_within(s + whole..s + self.len, s);
        self.len -= whole;
        whole
    }
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").field("len", &self.len).finish()
    }
}

/// Whole blocks written straight from the caller's memory, when it is aligned as the file
/// is, at least: below this the stage's copy costs less than another system call.
const IN_PLACE: usize = 256 * 1024;

/// How bytes reach the file.
#[derive(Debug)]
enum Mode {
    /// `O_DIRECT`: `stage` holds the bytes from file offset `base` (a multiple of
    /// [`ALIGN`]) on.
    Direct { stage: Stage, base: u64 },
    /// Through the page cache, written as they come.
    Buffered,
}

/// A file appended to sequentially; see the module documentation.
#[derive(Debug)]
pub(crate) struct AppendFile {
    file: File,
    mode: Mode,
    /// Logical length: everything appended, staged or written.
    len: u64,
}

impl AppendFile {
    /// Appends to `file`, whose first `len` bytes are kept (the file is cut there). Direct
    /// I/O is used when `direct` and the file system accepts it; the bytes of the partial
    /// block before `len` are read back to be rewritten with what follows.
    pub(crate) fn new(file: File, len: u64, direct: bool) -> io::Result<Self> {
        file.set_len(len)?;
        let mut this = Self {
            file,
            mode: Mode::Buffered,
            len,
        };
        if direct {
            // Read while the page cache still serves unaligned reads.
            let base = len / ALIGN as u64 * ALIGN as u64;
            let mut stage = Stage::new();
            let partial = (len - base) as usize;
            let at = stage.start;
            read_exact_at(&this.file, &mut stage.memory[at..at + partial], base)?;
            stage.len = partial;
            if set_direct(&this.file, true).is_ok() {
                this.mode = Mode::Direct { stage, base };
            }
        }
        Ok(this)
    }

    /// Whether writes bypass the page cache.
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        matches!(self.mode, Mode::Direct { .. })
    }

    /// The file (for syncing from another thread: it sees what was written, not what is
    /// still staged).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The file, with whatever is still staged dropped (call [`AppendFile::flush`] first to
    /// keep it).
    pub(crate) fn into_file(self) -> File {
        self.file
    }

    /// Appends `bytes`.
    pub(crate) fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.mode {
                Mode::Buffered => {
                    write_all_at(&self.file, bytes, self.len)?;
                    self.len += bytes.len() as u64;
                    return Ok(());
                }
                Mode::Direct { stage, base } => {
                    if let Some((head, whole)) = in_place(bytes, self.len) {
                        // Complete the staged partial block, then write the stage and the
                        // whole blocks of `bytes`, from where they are, in one request.
                        stage.fill(&bytes[..head]);
                        self.len += head as u64;
                        bytes = &bytes[head..];
                        let at = *base;
                        let staged = stage.len;
                        if let Err(e) =
                            write_both_at(&self.file, stage.bytes(), &bytes[..whole], at)
                        {
                            self.fall_back(e)?;
                            continue;
                        }
                        *base += (staged + whole) as u64;
                        stage.len = 0;
                        self.len += whole as u64;
                        bytes = &bytes[whole..];
                        continue;
                    }
                    let n = stage.fill(bytes);
                    bytes = &bytes[n..];
                    self.len += n as u64;
                    if stage.len == STAGE {
                        let at = *base;
                        match write_all_at(&self.file, stage.bytes(), at) {
                            Ok(()) => {
                                *base += STAGE as u64;
                                stage.len = 0;
                            }
                            Err(e) => self.fall_back(e)?,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes everything appended to the file (not necessarily to the disk: see
    /// [`AppendFile::sync_data`]).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        let Mode::Direct { stage, base } = &mut self.mode else {
            return Ok(());
        };
        if stage.len == 0 {
            return Ok(());
        }
        let at = *base;
        match write_all_at(&self.file, stage.padded(), at) {
            Ok(()) => {
                // The padding is cut off again; the partial block stays staged, to be
                // rewritten whole with what follows it.
                self.file.set_len(self.len)?;
                *base += stage.keep_partial_block() as u64;
                Ok(())
            }
            Err(e) => self.fall_back(e),
        }
    }

    /// Writes everything appended and forces it to disk.
    pub(crate) fn sync_data(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    /// Writes everything appended and forces it and the file's metadata to disk.
    pub(crate) fn sync_all(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_all()
    }

    /// A direct write failed: when the file system refuses direct I/O (`EINVAL`), the staged
    /// bytes are written through the page cache and so is everything after; other errors
    /// are the disk's and are returned.
    fn fall_back(&mut self, error: io::Error) -> io::Result<()> {
        if error.kind() != io::ErrorKind::InvalidInput {
            return Err(error);
        }
        let Mode::Direct { stage, base } = std::mem::replace(&mut self.mode, Mode::Buffered) else {
            return Err(error);
        };
        tracing::debug!("the file system refuses direct I/O; writing through the page cache");
        set_direct(&self.file, false)?;
        write_all_at(&self.file, stage.bytes(), base)?;
        self.file.set_len(self.len)
    }
}

/// When `bytes`, appended at file offset `at`, lie in memory at the alignment of their
/// place in the file and hold at least [`IN_PLACE`] bytes of whole blocks: how many bytes
/// complete the partial block before them, and how many whole blocks' bytes follow. Those
/// blocks can be written with `O_DIRECT` straight from `bytes`.
fn in_place(bytes: &[u8], at: u64) -> Option<(usize, usize)> {
    let misalignment = (at % ALIGN as u64) as usize;
    if bytes.as_ptr() as usize % ALIGN != misalignment {
        return None;
    }
    let head = (ALIGN - misalignment) % ALIGN;
    let whole = bytes.len().checked_sub(head)? / ALIGN * ALIGN;
    (whole >= IN_PLACE).then_some((head, whole))
}

/// The offset in a buffer at which bytes bound for file offset `at` lie at the alignment of
/// their place in the file (see [`AppendFile::append`]), for a buffer whose data starts at
/// `address`: less than 4 KiB.
pub(crate) fn lead_for(address: usize, at: u64) -> usize {
    let want = (at % ALIGN as u64) as usize;
    (want + ALIGN - address % ALIGN) % ALIGN
}

/// Extra room a buffer needs for [`lead_for`].
pub(crate) const MAX_LEAD: usize = ALIGN - 1;

#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    fcntl_setfl(file, flags)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    } else {
        Ok(())
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(bytes, offset)
}

/// Writes `first` and then `second` at `offset`, in one system call where the platform has
/// vectored positional writes (one direct I/O request instead of two).
#[cfg(target_os = "linux")]
fn write_both_at(file: &File, first: &[u8], second: &[u8], mut offset: u64) -> io::Result<()> {
    let mut slices = [io::IoSlice::new(first), io::IoSlice::new(second)];
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match rustix::io::pwritev(file, slices, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                io::IoSlice::advance_slices(&mut slices, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn write_both_at(file: &File, first: &[u8], second: &[u8], offset: u64) -> io::Result<()> {
    write_all_at(file, first, offset)?;
    write_all_at(file, second, offset + first.len() as u64)
}

#[cfg(unix)]
fn read_exact_at(file: &File, bytes: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(bytes, offset)
}

#[cfg(not(unix))]
fn write_all_at(mut file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, bytes: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that differ at every offset of interest.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn open(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn appended_bytes_read_back_exactly_across_stage_and_block_boundaries() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let mut out = AppendFile::new(open(&path), 0, direct).unwrap();
            let mut expected = Vec::new();
            // Odd sizes, one larger than the stage, so writes straddle every boundary.
            for (i, len) in [64, 1, ALIGN - 3, 5, STAGE + 777, 10_000, 3]
                .iter()
                .enumerate()
            {
                let chunk = pattern(*len, i as u8);
                out.append(&chunk).unwrap();
                expected.extend_from_slice(&chunk);
            }
            out.sync_data().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), expected, "direct: {direct}");
        }
    }

    /// `bytes` copied into a buffer at the alignment of file offset `at` (as the consumer's
    /// reader places frames); the buffer and where they start in it.
    fn placed(bytes: &[u8], at: u64) -> (Vec<u8>, usize) {
        let mut buffer = Vec::with_capacity(bytes.len() + MAX_LEAD);
        let lead = lead_for(buffer.as_ptr() as usize, at);
        assert!(lead <= MAX_LEAD);
        buffer.resize(lead, 0);
        buffer.extend_from_slice(bytes);
        assert_eq!(
            buffer[lead..].as_ptr() as u64 % ALIGN as u64,
            at % ALIGN as u64
        );
        (buffer, lead)
    }

    #[test]
    fn placed_bytes_skip_the_stage_and_read_back_exactly() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let mut out = AppendFile::new(open(&path), 0, direct).unwrap();
            let mut expected = Vec::new();
            // Placed frames at every kind of offset, between unplaced ones; one placed frame
            // too small to skip the stage, one ending on a block boundary.
            let frames = [
                (64, false),
                (IN_PLACE + ALIGN + 17, true),
                (3, false),
                (2 * IN_PLACE, true),
                (ALIGN - 1, true),
                (STAGE + 5, false),
                (IN_PLACE + 1, true),
            ];
            for (i, (len, place)) in frames.into_iter().enumerate() {
                let frame = pattern(len, i as u8);
                let at = expected.len() as u64;
                if place {
                    let (buffer, lead) = placed(&frame, at);
                    if direct && out.is_direct() && len >= IN_PLACE + ALIGN {
                        assert!(in_place(&buffer[lead..], at).is_some(), "frame {i}");
                    }
                    out.append(&buffer[lead..]).unwrap();
                } else {
                    out.append(&frame).unwrap();
                }
                expected.extend_from_slice(&frame);
                if i == 3 {
                    // A flush between placed frames keeps the partial block staged.
                    out.flush().unwrap();
                    assert_eq!(std::fs::read(&path).unwrap(), expected);
                }
            }
            out.sync_data().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), expected, "direct: {direct}");
        }
    }

    #[test]
    fn only_bytes_aligned_as_their_file_offset_and_large_enough_go_in_place() {
        let at = 3 * ALIGN as u64 + 100;
        let frame = pattern(IN_PLACE + 2 * ALIGN, 5);
        let (buffer, lead) = placed(&frame, at);
        let placed_bytes = &buffer[lead..];
        // The rest of the first block is staged, then whole blocks, then the tail.
        let (head, whole) = in_place(placed_bytes, at).unwrap();
        assert_eq!(head, ALIGN - 100);
        assert_eq!(whole, (frame.len() - head) / ALIGN * ALIGN);
        assert_eq!((placed_bytes.as_ptr() as usize + head) % ALIGN, 0);
        // The same bytes bound for another offset, or one byte further on, are not aligned.
        assert!(in_place(placed_bytes, at + 1).is_none());
        assert!(in_place(&placed_bytes[1..], at).is_none());
        // Too few whole blocks: the stage's copy is cheaper.
        assert!(in_place(&placed_bytes[..head + IN_PLACE - ALIGN], at).is_none());
        assert!(in_place(&placed_bytes[..head + IN_PLACE], at).is_some());
    }

    #[test]
    fn a_flush_leaves_the_true_length_and_appending_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut out = AppendFile::new(open(&path), 0, true).unwrap();
        let first = pattern(ALIGN + 100, 1);
        out.append(&first).unwrap();
        out.flush().unwrap();
        // No padding left on disk after a flush.
        assert_eq!(std::fs::read(&path).unwrap(), first);
        let second = pattern(3 * ALIGN + 5, 2);
        out.append(&second).unwrap();
        out.flush().unwrap();
        out.flush().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [first, second].concat(),
            "the partial block is rewritten whole, not duplicated"
        );
    }

    #[test]
    fn reopening_keeps_the_prefix_and_cuts_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let written = pattern(2 * ALIGN + 123, 7);
        std::fs::write(&path, &written).unwrap();
        // Keep an unaligned prefix; the rest (a torn message, say) goes.
        let keep = ALIGN + 50;
        let mut out = AppendFile::new(open(&path), keep as u64, true).unwrap();
        let more = pattern(ALIGN * 2, 9);
        out.append(&more).unwrap();
        out.sync_all().unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [&written[..keep], &more[..]].concat()
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn direct_io_is_used_where_the_file_system_offers_it() {
        // The tests' temporary directory is on a disk file system on Linux CI machines; on
        // tmpfs direct I/O may be refused, which the fallback covers.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let out = AppendFile::new(open(&path), 0, true).unwrap();
        let flags = rustix::fs::fcntl_getfl(out.file()).unwrap();
        assert_eq!(out.is_direct(), flags.contains(rustix::fs::OFlags::DIRECT));
        let buffered = AppendFile::new(open(&path), 0, false).unwrap();
        assert!(!buffered.is_direct());
    }

    #[test]
    fn a_refusal_of_direct_io_falls_back_to_the_page_cache_without_losing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut out = AppendFile::new(open(&path), 0, true).unwrap();
        if !out.is_direct() {
            return; // Nothing to fall back from on this file system.
        }
        let first = pattern(ALIGN * 3 + 1, 3);
        out.append(&first).unwrap();
        out.fall_back(io::Error::from(io::ErrorKind::InvalidInput))
            .unwrap();
        assert!(!out.is_direct());
        let second = pattern(1000, 4);
        out.append(&second).unwrap();
        out.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [first, second].concat());
        // Any other error is the disk's, and is reported.
        let mut out = AppendFile::new(open(&path), 0, true).unwrap();
        let err = out
            .fall_back(io::Error::from(io::ErrorKind::StorageFull))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(out.is_direct());
    }
}
