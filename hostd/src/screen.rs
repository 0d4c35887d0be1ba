//! One pane's screen and terminal state, read in a single tmux round trip.

use crate::tmux::{Tmux, TmuxError};

/// What a pane shows at one instant, plus the runtime's heartbeat counters
/// (filled in by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub cursor_x: u32,
    pub cursor_y: u32,
    pub width: u32,
    pub height: u32,
    pub history_size: u64,
    pub alternate_on: bool,
    pub in_mode: bool,
    pub dead: bool,
    /// Visible rows, trailing spaces trimmed.
    pub lines: Vec<String>,
    /// Heartbeat `turn`, if the runtime reports one.
    pub turn: Option<u64>,
    /// Heartbeat says `busy`.
    pub busy: bool,
}

const FORMAT: &str = "S\t#{cursor_x}\t#{cursor_y}\t#{pane_width}\t#{pane_height}\t#{history_size}\t#{alternate_on}\t#{pane_in_mode}\t#{pane_dead}";

impl Snapshot {
    /// The row the cursor is on (the input row of line editors and TUIs).
    pub fn cursor_row(&self) -> &str {
        self.lines
            .get(self.cursor_y as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn is_blank(&self) -> bool {
        self.lines.iter().all(|l| l.trim().is_empty())
    }

    /// Parses `display -p FORMAT ; capture-pane -p` output.
    pub fn parse(out: &str) -> Option<Self> {
        let mut lines = out.split('\n');
        let head = lines.next()?;
        let mut f = head.strip_prefix("S\t")?.split('\t');
        let mut num = || f.next().and_then(|v| v.trim().parse::<u64>().ok());
        let cursor_x = u32::try_from(num()?).ok()?;
        let cursor_y = u32::try_from(num()?).ok()?;
        let width = u32::try_from(num()?).ok()?;
        let height = u32::try_from(num()?).ok()?;
        let history_size = num()?;
        let alternate_on = num()? == 1;
        let in_mode = num()? == 1;
        let dead = num()? == 1;
        let mut rows: Vec<String> = lines.map(|l| l.trim_end().to_owned()).collect();
        rows.truncate(height as usize);
        Some(Self {
            cursor_x,
            cursor_y,
            width,
            height,
            history_size,
            alternate_on,
            in_mode,
            dead,
            lines: rows,
            turn: None,
            busy: false,
        })
    }
}

/// Reads cursor, modes and screen of `pane_id` with one tmux process.
pub async fn snapshot(tmux: &Tmux, pane_id: &str, colours: bool) -> Result<Snapshot, TmuxError> {
    let mut args = vec![
        "display-message",
        "-p",
        "-t",
        pane_id,
        FORMAT,
        ";",
        "capture-pane",
        "-p",
        "-t",
        pane_id,
    ];
    if colours {
        args.push("-e");
    }
    let out = tmux.run(args).await?;
    Snapshot::parse(&out).ok_or_else(|| TmuxError::Failed {
        command: "display-message".into(),
        message: "unexpected snapshot output".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_and_rows() {
        let out = "S\t4\t2\t80\t4\t0\t0\t0\t0\nPython 3.11.7\n>>> 1+1\n>>> \n\n";
        let s = Snapshot::parse(out).unwrap();
        assert_eq!((s.cursor_x, s.cursor_y, s.width, s.height), (4, 2, 80, 4));
        assert_eq!(s.cursor_row(), ">>>");
        assert_eq!(s.lines.len(), 4);
        assert!(!s.is_blank());
    }

    #[test]
    fn refuses_garbage() {
        assert!(Snapshot::parse("hello").is_none());
        assert!(Snapshot::parse("S\tx").is_none());
    }
}
