//! The bytes a database is read from: a private, read-only copy of the
//! file that no other process can shrink.
//!
//! Mapping the operator's file directly means that `cp new.mmdb
//! current.mmdb` or `truncate` on it turns the next read of a page past the
//! new end into SIGBUS, which kills the whole server. So the file is first
//! copied into an inode only this process holds, and that copy is mapped:
//!
//! - on Linux, an unlinked temporary file in the database's own directory
//!   (`O_TMPFILE | O_EXCL`: it never gets a name, mode 0400 so it cannot be
//!   reopened for writing through `/proc`; the descriptor is closed once
//!   mapped). It lives in the page cache like the original, so after the
//!   compile its pages are reclaimable and the process stays small; on
//!   filesystems with reflinks the copy shares the blocks;
//! - where that directory refuses (read-only, no `O_TMPFILE`), a sealed
//!   memfd (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE`): the kernel
//!   refuses any change of size or content, but its pages are memory
//!   (shmem) for as long as the database serves;
//! - elsewhere, the file read into memory.
//!
//! A file rewritten while it is being copied is noticed (its size or
//! modification time changed) and refused; the watcher tries again once the
//! file has settled.

use std::fs::File;
use std::io;
use std::path::Path;

use super::FileStamp;

/// Where the private copy lives (for the log and the status API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// An unlinked file beside the database (page cache, reclaimable).
    TempFile,
    /// A sealed memfd (memory for as long as the database serves).
    Memfd,
    /// Read into the heap (platforms without the above).
    Heap,
}

impl Backing {
    pub fn as_str(self) -> &'static str {
        match self {
            Backing::TempFile => "temp_file",
            Backing::Memfd => "memfd",
            Backing::Heap => "heap",
        }
    }
}

/// A read-only view of a private copy.
pub(super) enum Bytes {
    Mapped(memmap2::Mmap),
    Heap(Box<[u8]>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Heap(h) => h,
        }
    }
}

impl Bytes {
    /// Lets the kernel drop the pages read so far; a no-op for heap bytes.
    pub(super) fn release(&self) {
        if let Bytes::Mapped(m) = self {
            // SAFETY: the mapping is read-only and backed by a private copy
            // (file or memfd) whose size cannot change; MADV_DONTNEED only
            // drops this process's page table entries, and the pages are
            // faulted back in from the copy if touched again.
            let r = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
            if let Err(e) = r {
                tracing::debug!(error = %e, "madvise(DONTNEED) failed");
            }
        }
    }
}

/// Copies `path` into a private inode and maps the copy. Returns the bytes,
/// the stamp of the file that was copied, and where the copy lives.
pub(super) fn private_copy(path: &Path) -> io::Result<(Bytes, FileStamp, Backing)> {
    let mut src = File::open(path)?;
    let before = FileStamp::of_file(&src)?;
    let (bytes, backing) = copy_into_private(&mut src, path, before.len)?;
    let after = FileStamp::of_file(&src)?;
    if before != after || bytes.as_ref().len() as u64 != before.len {
        return Err(io::Error::other(
            "the file changed while it was being read (rewritten in place?)",
        ));
    }
    Ok((bytes, before, backing))
}

#[cfg(target_os = "linux")]
fn copy_into_private(src: &mut File, path: &Path, len: u64) -> io::Result<(Bytes, Backing)> {
    let (mut dst, backing) = match temp_file_beside(path) {
        Ok(f) => (f, Backing::TempFile),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no temporary file beside the database; copying into a memfd");
            (memfd()?, Backing::Memfd)
        }
    };
    // std's copy uses copy_file_range (a reflink where the filesystem can)
    // and falls back to read/write. Never more than the size seen at open:
    // a file growing meanwhile is caught by the stamp check.
    let copied = io::copy(&mut io::Read::take(&mut *src, len), &mut dst)?;
    if copied != len {
        return Err(io::Error::other(format!(
            "the file shrank while it was being read ({copied} of {len} bytes)"
        )));
    }
    if backing == Backing::Memfd {
        seal(&dst)?;
    }
    if len == 0 {
        // Nothing to map (mmap of zero bytes fails); the reader rejects it.
        return Ok((Bytes::Heap(Box::default()), backing));
    }
    // SAFETY: `dst` is an inode no other process can shrink: an unlinked
    // O_TMPFILE created with O_EXCL (never linked into the filesystem) and
    // mode 0400, whose descriptor is closed right after mapping, or a memfd
    // sealed against shrinking, growing and writing. The mapping is
    // read-only, so reads of it cannot fault past its end.
    let map = unsafe { memmap2::Mmap::map(&dst) }?;
    Ok((Bytes::Mapped(map), backing))
}

/// An unlinked, unlinkable file in `path`'s directory, readable only by its
/// owner (the descriptor itself is read-write).
#[cfg(target_os = "linux")]
fn temp_file_beside(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o400)
        .custom_flags(libc::O_TMPFILE | libc::O_EXCL | libc::O_CLOEXEC)
        .open(dir)
}

#[cfg(target_os = "linux")]
fn memfd() -> io::Result<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns
    // a new descriptor (or -1), which we own from here on.
    let fd = unsafe {
        libc::memfd_create(
            c"geolb-geoip".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Seals a memfd: its size and contents can no longer change.
#[cfg(target_os = "linux")]
fn seal(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor we own, with an integer argument.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn copy_into_private(src: &mut File, _path: &Path, len: u64) -> io::Result<(Bytes, Backing)> {
    let mut buf = Vec::with_capacity(len as usize);
    io::Read::read_to_end(&mut io::Read::take(&mut *src, len), &mut buf)?;
    Ok((Bytes::Heap(buf.into_boxed_slice()), Backing::Heap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_survives_the_original_being_truncated_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.mmdb");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let (bytes, stamp, backing) = private_copy(&path).expect("copy");
        assert_eq!(stamp.len, data.len() as u64);
        #[cfg(target_os = "linux")]
        assert_eq!(backing, Backing::TempFile);
        let _ = backing;
        // The copy has no name in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .expect("ls");
        assert_eq!(names, [std::ffi::OsString::from("db.mmdb")]);
        bytes.release();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(10))
            .expect("truncate");
        // Every page of the copy still reads (a SIGBUS would kill the test).
        assert_eq!(bytes.as_ref(), &data[..]);
        std::fs::write(&path, b"short").expect("rewrite");
        assert_eq!(bytes.as_ref(), &data[..]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_directory_that_refuses_a_temporary_file_gets_a_sealed_memfd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.mmdb");
        std::fs::write(&path, [1u8; 5000]).expect("write");
        let mut src = File::open(&path).expect("open");
        let elsewhere = dir.path().join("no-such-dir/db.mmdb");
        let (bytes, backing) = copy_into_private(&mut src, &elsewhere, 5000).expect("copy");
        assert_eq!(backing, Backing::Memfd);
        assert_eq!(bytes.as_ref(), &[1u8; 5000][..]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_sealed_memfd_cannot_be_shrunk_grown_or_written() {
        let mut f = memfd().expect("memfd");
        io::Write::write_all(&mut f, &[7u8; 8192]).expect("fill");
        seal(&f).expect("seal");
        assert!(f.set_len(10).is_err(), "shrink");
        assert!(f.set_len(1 << 20).is_err(), "grow");
        assert!(io::Write::write_all(&mut f, b"x").is_err(), "write");
    }
}
