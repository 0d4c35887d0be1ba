//! A screen line with ANSI colour escapes (tmux `capture-pane -e`) turned
//! into styled runs of plain text for the dashboard. Only SGR (colour and
//! weight) is kept; every other escape and control character is dropped, so
//! what reaches the page is text and `#rrggbb` colours this module made,
//! never bytes an agent chose. The page puts the text in with
//! `textContent`: nothing here is HTML.

use serde::Serialize;

/// One run of text in one style.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Run {
    /// The text (no control characters).
    pub t: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bg: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub b: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dim: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub i: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub u: bool,
}

/// The style an SGR sequence sets.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Style {
    fg: Option<u32>,
    bg: Option<u32>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
    inverse: bool,
}

/// Characters kept per line: a frame is bounded whatever a pane holds.
pub const MAX_LINE_CHARS: usize = 4096;

/// The xterm palette's first 16 colours.
const BASE: [u32; 16] = [
    0x000000, 0xcd0000, 0x00cd00, 0xcdcd00, 0x0000ee, 0xcd00cd, 0x00cdcd, 0xe5e5e5, 0x7f7f7f,
    0xff0000, 0x00ff00, 0xffff00, 0x5c5cff, 0xff00ff, 0x00ffff, 0xffffff,
];

fn palette(n: u32) -> u32 {
    match n {
        0..=15 => BASE[n as usize],
        16..=231 => {
            let n = n - 16;
            let level = |v: u32| if v == 0 { 0 } else { 55 + v * 40 };
            (level(n / 36) << 16) | (level((n / 6) % 6) << 8) | level(n % 6)
        }
        _ => {
            let g = 8 + (n.min(255) - 232) * 10;
            (g << 16) | (g << 8) | g
        }
    }
}

fn hex(c: u32) -> String {
    format!("#{:06x}", c & 0xff_ffff)
}

impl Style {
    fn run(&self, t: String) -> Run {
        let (mut fg, mut bg) = (self.fg, self.bg);
        if self.inverse {
            // Default colours swap to the page's own (dark on light).
            std::mem::swap(&mut fg, &mut bg);
            fg = fg.or(Some(0x111111));
            bg = bg.or(Some(0xe5e5e5));
        }
        Run {
            t,
            fg: fg.map(hex),
            bg: bg.map(hex),
            b: self.bold,
            dim: self.dim,
            i: self.italic,
            u: self.underline,
        }
    }

    /// Applies one SGR parameter list (`;` and `:` both separate).
    fn apply(&mut self, params: &[u32]) {
        if params.is_empty() {
            *self = Style::default();
            return;
        }
        let mut i = 0;
        while i < params.len() {
            let p = params[i];
            match p {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                7 => self.inverse = true,
                22 => {
                    self.bold = false;
                    self.dim = false;
                }
                23 => self.italic = false,
                24 => self.underline = false,
                27 => self.inverse = false,
                30..=37 => self.fg = Some(palette(p - 30)),
                39 => self.fg = None,
                40..=47 => self.bg = Some(palette(p - 40)),
                49 => self.bg = None,
                90..=97 => self.fg = Some(palette(p - 90 + 8)),
                100..=107 => self.bg = Some(palette(p - 100 + 8)),
                38 | 48 => {
                    let colour = match params.get(i + 1) {
                        Some(5) => {
                            let c = params.get(i + 2).map(|n| palette(*n.min(&255)));
                            i += 2;
                            c
                        }
                        Some(2) => {
                            let c = |k: usize| params.get(i + k).map_or(0, |v| (*v).min(255));
                            let rgb = (c(2) << 16) | (c(3) << 8) | c(4);
                            i += 4;
                            Some(rgb)
                        }
                        _ => None,
                    };
                    if p == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The runs of one screen line, at most [`MAX_LINE_CHARS`] characters.
pub fn runs(line: &str) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut style = Style::default();
    let mut text = String::new();
    let mut kept = 0usize;
    let mut chars = line.chars().peekable();
    let flush = |text: &mut String, style: &Style, out: &mut Vec<Run>| {
        if !text.is_empty() {
            out.push(style.run(std::mem::take(text)));
        }
    };
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.next() {
                Some('[') => {
                    // CSI: parameters, then one final byte in @..~.
                    let mut params: Vec<u32> = Vec::new();
                    let mut cur: Option<u32> = None;
                    let mut fin = None;
                    let mut private = false;
                    for c in chars.by_ref() {
                        match c {
                            '0'..='9' => {
                                let d = c as u32 - '0' as u32;
                                cur = Some(cur.unwrap_or(0).saturating_mul(10).saturating_add(d));
                            }
                            ';' | ':' if params.len() < 32 => {
                                params.push(cur.take().unwrap_or(0));
                            }
                            ';' | ':' => cur = None,
                            '<'..='?' => private = true,
                            '@'..='~' => {
                                fin = Some(c);
                                break;
                            }
                            _ => {}
                        }
                    }
                    if let Some(v) = cur
                        && params.len() < 32
                    {
                        params.push(v);
                    }
                    if fin == Some('m') && !private {
                        let mut next = style;
                        next.apply(&params);
                        if next != style {
                            flush(&mut text, &style, &mut out);
                            style = next;
                        }
                    }
                }
                Some(']') | Some('P') | Some('_') | Some('^') => {
                    // OSC, DCS, APC, PM: skipped up to BEL or ST.
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if kept >= MAX_LINE_CHARS {
            break;
        }
        let c = if c == '\t' { ' ' } else { c };
        if c.is_control() {
            continue;
        }
        text.push(c);
        kept += 1;
    }
    flush(&mut text, &style, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_runs_and_every_other_byte_is_text_or_gone() {
        let r =
            runs("a\x1b[1;31mred\x1b[0m <b>&\x1b]0;title\x07\x1b[38;5;21mX\x1b[48;2;1;2;3mY\x07");
        assert_eq!(r[0].t, "a");
        assert_eq!(r[1].t, "red");
        assert_eq!(r[1].fg.as_deref(), Some("#cd0000"));
        assert!(r[1].b);
        assert_eq!(r[2].t, " <b>&");
        assert_eq!(r[2].fg, None);
        assert_eq!(r[3].t, "X");
        assert_eq!(r[3].fg.as_deref(), Some("#0000ff"));
        assert_eq!(r[4].bg.as_deref(), Some("#010203"));
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn odd_escapes_never_panic() {
        for s in [
            "\x1b",
            "\x1b[",
            "\x1b[38;5",
            "\x1b[38;2;999999999999999999;1m",
            "\x1b[48;5;9999m",
            "\x1b]unterminated",
            "\x1b[?25l\x1b[2Jx",
            "\u{9b}31m",
        ] {
            let _ = runs(s);
        }
        assert_eq!(runs("\x1b[?25lx")[0].t, "x");
        let long = "y".repeat(MAX_LINE_CHARS * 2);
        assert_eq!(runs(&long)[0].t.len(), MAX_LINE_CHARS);
    }
}
