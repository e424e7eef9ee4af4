//! SQLite plumbing shared by the stores kept in the data directory (`--data-dir`): the group-commit writer
//! thread ([`commit`]) and the lock that keeps a second process off a store ([`lock_directory`]).

pub mod commit;

use std::fs::File;
use std::path::Path;

/// Why a data directory's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The directory could not be created or the lock file could not be opened.
    #[error("data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("data directory {0} is in use by another process")]
    InUse(String),
}

/// Creates `dir` when missing and takes an exclusive `flock` on `dir/<name>`, so two processes never write the
/// same store. The lock goes with the returned file: when it is closed, or with the process however it ends.
pub fn lock_directory(dir: &Path, name: &str) -> Result<File, LockError> {
    use std::os::fd::AsRawFd;
    let directory = |source| LockError::Directory {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(directory)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(name))
        .map_err(directory)?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(LockError::InUse(dir.display().to_string()));
    }
    Ok(file)
}
