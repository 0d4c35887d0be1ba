//! Text tables for a terminal: width-aware (low-priority columns drop first
//! when the terminal is narrow), colour only on a tty and never with
//! `NO_COLOR`.

use std::io::IsTerminal;

/// How output should look.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
    /// Terminal width; `None` = unlimited (not a terminal).
    pub width: Option<usize>,
    /// Print the header line.
    pub headers: bool,
}

impl Style {
    pub fn for_stdout() -> Self {
        let tty = std::io::stdout().is_terminal();
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let width = if tty {
            rustix::termios::tcgetwinsize(std::io::stdout())
                .ok()
                .map(|w| usize::from(w.ws_col))
                .filter(|w| *w > 0)
                .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        } else {
            None
        };
        Self {
            colour: tty && !no_colour,
            width,
            headers: true,
        }
    }

    pub fn plain() -> Self {
        Self {
            colour: false,
            width: None,
            headers: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    None,
    Green,
    Yellow,
    Red,
    Dim,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::None => "",
            Colour::Green => "\x1b[32m",
            Colour::Yellow => "\x1b[33m",
            Colour::Red => "\x1b[31m",
            Colour::Dim => "\x1b[2m",
        }
    }
}

/// `text` safe to print on a terminal: every C0 and C1 control character
/// and DEL — which a process name, a command line, a screen or an event a
/// peer sent can carry (an `ESC ] 52` clipboard write, colours) — is shown
/// as an escape (`\x1b`, `\u{9b}`), never interpreted. `newlines` keeps
/// `\n` for text this program composed over several lines.
pub fn printable(text: &str, newlines: bool) -> std::borrow::Cow<'_, str> {
    let control = |c: char| {
        (c.is_control() && !(newlines && c == '\n')) || ('\u{80}'..='\u{9f}').contains(&c)
    };
    if !text.chars().any(control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !control(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How a read verb prints: `-o table|wide|json|name`, `--json`,
/// `--no-headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Columns fitted to the terminal (the least important drop first).
    #[default]
    Table,
    /// Every column, whatever the terminal's width.
    Wide,
    /// The stable JSON document.
    Json,
    /// One address per line (TENANT/HOST/AGENT, TENANT/HOST), for scripts.
    Name,
}

/// The output flags of a read verb.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Machine-readable output: the same as `-o json`.
    #[arg(long)]
    pub json: bool,
    /// table (default), wide (every column), json, or name (one address
    /// per line).
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_enum)]
    pub output: Option<Format>,
    /// Leave out the header line of a table.
    #[arg(long)]
    pub no_headers: bool,
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        match (self.json, self.output) {
            (true, _) => Format::Json,
            (false, Some(f)) => f,
            (false, None) => Format::Table,
        }
    }

    /// The table style for stdout under these flags.
    pub fn style(&self) -> Style {
        let mut s = Style::for_stdout();
        if self.format() == Format::Wide {
            s.width = None;
        }
        s.headers = !self.no_headers;
        s
    }
}

/// A column: header and priority (higher = kept longer when narrow).
#[derive(Debug, Clone)]
pub struct Column {
    pub header: &'static str,
    pub priority: u8,
}

pub type Cell = (String, Colour);

/// Renders rows under headers, dropping the lowest-priority columns until
/// the table fits `style.width`.
pub fn table(columns: &[Column], rows: &[Vec<Cell>], style: Style) -> String {
    let mut keep: Vec<usize> = (0..columns.len()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            rows.iter()
                .map(|r| {
                    r.get(i)
                        .map_or(0, |c| printable(&c.0, false).chars().count())
                })
                .chain([columns[i].header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    if let Some(limit) = style.width {
        let total = |keep: &[usize]| keep.iter().map(|&i| widths[i] + 2).sum::<usize>();
        while total(&keep) > limit + 2 && keep.len() > 1 {
            let Some(pos) = keep
                .iter()
                .enumerate()
                .min_by_key(|(p, i)| (columns[**i].priority, std::cmp::Reverse(*p)))
                .map(|(p, _)| p)
            else {
                break;
            };
            keep.remove(pos);
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<Cell>, out: &mut String| {
        let last = keep.len().saturating_sub(1);
        for (n, &i) in keep.iter().enumerate() {
            let (text, colour) = cells.get(i).cloned().unwrap_or_default_cell();
            let text = printable(&text, false).into_owned();
            let pad = widths[i].saturating_sub(text.chars().count());
            if style.colour && colour != Colour::None {
                out.push_str(colour.code());
                out.push_str(&text);
                out.push_str("\x1b[0m");
            } else {
                out.push_str(&text);
            }
            if n != last {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    if style.headers {
        line(
            columns
                .iter()
                .map(|c| (c.header.to_owned(), Colour::None))
                .collect(),
            &mut out,
        );
    }
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

trait DefaultCell {
    fn unwrap_or_default_cell(self) -> Cell;
}

impl DefaultCell for Option<Cell> {
    fn unwrap_or_default_cell(self) -> Cell {
        self.unwrap_or_else(|| (String::new(), Colour::None))
    }
}

/// `4s`, `3m12s`, `2h05m`, `3d04h`; `-` when unknown.
pub fn age(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "-".into();
    };
    let s = s.max(0.0);
    if s < 10.0 {
        return format!("{s:.1}s");
    }
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        vec![
            Column {
                header: "NAME",
                priority: 9,
            },
            Column {
                header: "CLASS",
                priority: 1,
            },
            Column {
                header: "HEALTH",
                priority: 8,
            },
        ]
    }

    fn rows() -> Vec<Vec<Cell>> {
        vec![vec![
            ("coder0".into(), Colour::None),
            ("implementer".into(), Colour::None),
            ("healthy".into(), Colour::Green),
        ]]
    }

    #[test]
    fn aligns_columns() {
        let t = table(&cols(), &rows(), Style::plain());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME    CLASS        HEALTH");
        assert_eq!(lines[1], "coder0  implementer  healthy");
    }

    #[test]
    fn narrow_terminals_drop_low_priority_columns() {
        let style = Style {
            colour: false,
            width: Some(20),
            headers: true,
        };
        let t = table(&cols(), &rows(), style);
        assert!(!t.contains("CLASS"), "{t}");
        assert!(t.contains("HEALTH"), "{t}");
    }

    #[test]
    fn no_headers_leaves_only_rows() {
        let style = Style {
            headers: false,
            ..Style::plain()
        };
        let t = table(&cols(), &rows(), style);
        assert_eq!(
            t.lines().next(),
            Some("coder0  implementer  healthy"),
            "{t}"
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let style = Style {
            colour: true,
            width: None,
            headers: true,
        };
        assert!(table(&cols(), &rows(), style).contains("\x1b[32mhealthy\x1b[0m"));
        assert!(!table(&cols(), &rows(), Style::plain()).contains('\x1b'));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(None), "-");
        assert_eq!(age(Some(1.25)), "1.2s");
        assert_eq!(age(Some(75.0)), "1m15s");
        assert_eq!(age(Some(7300.0)), "2h01m");
        assert_eq!(age(Some(-3.0)), "0.0s");
    }
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn controls_a_peer_sends_are_shown_never_interpreted() {
        let hostile = "x\u{1b}]52;c;aGk=\u{7}\u{1b}[31mred\u{9b}2J\u{7f}";
        let shown = printable(hostile, false);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert_eq!(shown, "x\\x1b]52;c;aGk=\\x07\\x1b[31mred\\u{9b}2J\\x7f");
        assert_eq!(printable("plain ünïcode", false), "plain ünïcode");
        assert_eq!(printable("a\nb", false), "a\\x0ab");
        assert_eq!(printable("a\nb\u{1b}", true), "a\nb\\x1b");
    }
}

/// `HH:MM:SS` (UTC) of a Unix-milliseconds instant.
pub fn clock_utc(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}
