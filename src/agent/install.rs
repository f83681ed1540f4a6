//! Installing the CNI plugin binary on the host.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Copies the plugin binary `source` into `dir` as `name`, atomically: the bytes go to a
/// temporary file in the same directory, are flushed to disk and made executable, and only
/// then renamed over the old binary. A runtime executing the plugin meanwhile runs either
/// the old or the new one, never a half-written file (a plain copy would give ETXTBSY or a
/// truncated binary).
pub fn install_plugin(source: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let target = dir.join(name);
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)?;
    io::copy(&mut File::open(source)?, temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(0o755))?;
    temp.persist(&target).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_an_executable_copy_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("build");
        fs::write(&source, b"new plugin").unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("ipledger"), b"old plugin").unwrap();

        let installed = install_plugin(&source, &bin, "ipledger").unwrap();

        assert_eq!(installed, bin.join("ipledger"));
        assert_eq!(fs::read(&installed).unwrap(), b"new plugin");
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
}
