//! The recorded screens of `fixtures/screens/<runtime>/*.txt`, shared by
//! the screen tests and the classifier's property tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fleet_hostd::screen::Snapshot;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/screens")
}

/// One recorded screen: first line `cursor_x cursor_y`, then the rows of a
/// 120-column pane.
pub fn load(path: &Path) -> Snapshot {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let mut cursor = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|v| v.trim().parse::<u32>().unwrap());
    let (x, y) = (cursor.next().unwrap(), cursor.next().unwrap());
    let rows: Vec<String> = lines.map(|l| l.trim_end().to_owned()).collect();
    Snapshot {
        cursor_x: x,
        cursor_y: y,
        width: 120,
        height: rows.len() as u32,
        lines: rows,
        ..Default::default()
    }
}
