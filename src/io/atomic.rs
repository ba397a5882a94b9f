//! Atomic file replacement: write to a temporary file in the destination's folder, flush it
//! to disk, then rename it over the destination. A reader (or an interrupted run) sees the
//! old file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::IoError;

/// Distinguishes temporary files of concurrent writers within one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Whether `name` is that of a temporary file [`PendingFile`] creates (`.<name>.<pid>.<n>.tmp`),
/// e.g. one left behind by a process killed while writing.
pub(crate) fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// A temporary file that becomes `dest` on [`PendingFile::commit`], and is removed if
/// dropped uncommitted (after an error).
#[derive(Debug)]
pub(crate) struct PendingFile {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl PendingFile {
    /// Creates the temporary file beside `dest`; `dest` itself is not touched yet.
    pub(crate) fn create(dest: &Path) -> Result<(Self, File), IoError> {
        let write_error = |source| IoError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let name = dest.file_name().ok_or_else(|| {
            write_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path has no file name",
            ))
        })?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = dir.join(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(write_error)?;
        let pending = Self {
            temp,
            dest: dest.to_path_buf(),
            committed: false,
        };
        Ok((pending, file))
    }

    /// Flushes `file` (the one [`PendingFile::create`] returned) to disk and renames it
    /// over the destination.
    pub(crate) fn commit(mut self, file: File) -> Result<(), IoError> {
        let write_error = |source| IoError::Write {
            path: self.dest.clone(),
            source,
        };
        file.sync_all().map_err(write_error)?;
        drop(file);
        fs::rename(&self.temp, &self.dest).map_err(write_error)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that made us drop it is the one worth reporting.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Replaces `dest` with `bytes`, atomically.
pub(crate) fn write_bytes_atomic(dest: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let (pending, mut file) = PendingFile::create(dest)?;
    let write_error = |source| IoError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let (first, second) = bytes.split_at(bytes.len() / 2);
    file.write_all(first).map_err(write_error)?;
    file.flush().map_err(write_error)?;
    crate::failpoint::reached("write");
    file.write_all(second).map_err(write_error)?;
    pending.commit(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_destination_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        write_bytes_atomic(&dest, b"new").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(names_in(dir.path()), ["out.txt"]);
    }

    #[test]
    fn an_uncommitted_file_is_removed_and_the_destination_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.txt");
        fs::write(&dest, b"old").unwrap();
        {
            let (_pending, mut file) = PendingFile::create(&dest).unwrap();
            file.write_all(b"half").unwrap();
            assert_eq!(names_in(dir.path()).len(), 2);
        }
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), ["out.txt"]);
    }

    #[test]
    fn a_missing_folder_is_a_write_error_naming_the_destination() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("no/such/dir/out.txt");
        let err = write_bytes_atomic(&dest, b"x").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot write {}: ", dest.display())),
            "{err}"
        );
    }
}
