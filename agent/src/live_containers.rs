//! Which containers the runtime still runs, so a restart can free the IPs of
//! the others. The list source is a file (one container id per line, `#`
//! comments); on a node, the runtime's state is exported there by a hook or
//! sidecar. No source configured means nothing is freed on restart.

use std::collections::BTreeSet;
use std::path::Path;

/// Reads the live-container list file.
pub fn read_list(path: &Path) -> Result<BTreeSet<String>, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_file_skips_blanks_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live");
        std::fs::write(&path, "# running\nabc\n\n  def  \n").unwrap();
        let got = read_list(&path).unwrap();
        assert_eq!(got, BTreeSet::from(["abc".to_owned(), "def".to_owned()]));
        assert!(read_list(&dir.path().join("missing")).is_err());
    }
}
