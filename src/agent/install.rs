//! Installing the CNI plugin binary on the host, and the atomic write it shares with the
//! network configuration the agent writes.

use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The first bytes of an ELF file: what the kernel executes as a binary.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Copies the plugin binary `source` into `dir` as `name`, atomically (see
/// [`write_atomically`]): a runtime executing the plugin meanwhile runs either the old or
/// the new one, never a half-written file (a plain copy would give ETXTBSY or a truncated
/// binary).
///
/// `source` must be an executable regular ELF file: anything else (a directory, a file
/// without an exec bit, a script, a wrong `--cni-binary`) is refused before the installed
/// plugin is touched, so a bad source fails the agent's start instead of every pod's
/// attachment.
pub fn install_plugin(source: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    let refuse = |problem: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {problem}", source.display()),
        )
    };
    let mut file = File::open(source)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", source.display())))?;
    // Checked on the open file, the one copied: not on a path that may change between.
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(refuse("not a regular file"));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(refuse("not executable (no exec bit set)"));
    }
    let mut magic = [0; 4];
    if file.read_exact(&mut magic).is_err() || &magic != ELF_MAGIC {
        return Err(refuse("not an ELF executable"));
    }
    file.seek(SeekFrom::Start(0))?;
    write_atomically(dir, name, 0o755, |temp| io::copy(&mut file, temp).map(drop))
}

/// Writes `dir/name` atomically with `mode`: `write` fills a temporary file in the same
/// directory (a rename is atomic only within a filesystem), which is flushed to disk,
/// given its mode and renamed over the old file; then the directory is flushed, so the
/// rename survives a crash. A reader sees the old file or the new one, never a part, and
/// a failure leaves the old file and no temporary one.
pub fn write_atomically(
    dir: &Path,
    name: &str,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let target = dir.join(name);
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)?;
    write(temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    temp.persist(&target).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real executable to install: this test binary, an ELF file with its exec bit.
    fn executable() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    #[test]
    fn installs_an_executable_copy_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let source = executable();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("ipledger"), b"old plugin").unwrap();

        let installed = install_plugin(&source, &bin, "ipledger").unwrap();

        assert_eq!(installed, bin.join("ipledger"));
        assert_eq!(fs::read(&installed).unwrap(), fs::read(&source).unwrap());
        assert_eq!(
            fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let leftovers: Vec<_> = fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("ipledger")],
            "temporary files left behind"
        );
    }

    #[test]
    fn a_missing_source_leaves_the_installed_plugin_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ipledger"), b"old plugin").unwrap();

        let err = install_plugin(&dir.path().join("absent"), dir.path(), "ipledger").unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            fs::read(dir.path().join("ipledger")).unwrap(),
            b"old plugin"
        );
    }

    /// Installs `source` over an installed "old plugin" and returns the error, after
    /// checking that the old plugin is untouched and no temporary file is left.
    fn refused(source: &Path) -> io::Error {
        let bin = tempfile::tempdir().unwrap();
        fs::write(bin.path().join("ipledger"), b"old plugin").unwrap();

        let err = install_plugin(source, bin.path(), "ipledger").unwrap_err();

        assert_eq!(
            fs::read(bin.path().join("ipledger")).unwrap(),
            b"old plugin",
            "the installed plugin was replaced"
        );
        assert_eq!(
            fs::read_dir(bin.path()).unwrap().count(),
            1,
            "files left behind"
        );
        assert!(
            err.to_string().contains(&source.display().to_string()),
            "the error names the source: {err}"
        );
        err
    }

    #[test]
    fn refuses_a_source_without_the_exec_bit() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("ipledger-cni");
        fs::copy(executable(), &source).unwrap();
        fs::set_permissions(&source, Permissions::from_mode(0o644)).unwrap();

        let err = refused(&source);

        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not executable"), "{err}");
    }

    #[test]
    fn refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();

        let err = refused(dir.path());

        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn refuses_an_executable_that_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("ipledger-cni");
        fs::write(&source, b"#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&source, Permissions::from_mode(0o755)).unwrap();

        let err = refused(&source);

        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not an ELF executable"), "{err}");
    }
}
