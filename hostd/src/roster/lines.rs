//! Mapping a parse error back to the file: key paths to lines (YAML and TOML), cleaned messages.

use super::*;

/// Parses and checks roster text; `path` is only used in messages.
/// The line where a second YAML document begins: a `---` or `...` after
/// content, or else the first content line indented less than the first
/// one (which makes libyaml end the first document there).
pub(super) fn second_document(text: &str) -> usize {
    let mut first_indent = None;
    for (i, l) in text.lines().enumerate() {
        let content = l.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = l.len() - content.len();
        match first_indent {
            None => first_indent = Some(indent),
            Some(_) if l.starts_with("---") || l.starts_with("...") => return i + 1,
            Some(f) if indent < f => return i + 1,
            Some(_) => {}
        }
    }
    1
}

/// serde's messages end with " at line X column Y" (yaml) or carry a
/// trailing period; the location is reported separately.
pub(super) fn clean_message(m: &str) -> String {
    let m = m.trim();
    let m = match m.find(" at line ") {
        Some(i) => &m[..i],
        None => m,
    };
    m.trim_end_matches('.').to_owned()
}

pub(super) fn path_string(p: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    if out == "." { String::new() } else { out }
}

pub(super) fn line_at(text: &str, byte: usize) -> usize {
    text.get(..byte.min(text.len()))
        .map_or(1, |t| t.matches('\n').count() + 1)
}

/// Where each key path (`agents[1].runtime`) is written in the file, for
/// messages about values serde accepted but the roster rules refuse. Covers
/// block-style YAML and TOML tables, which is how rosters are written.
pub(super) struct LineIndex {
    pub(super) lines: HashMap<String, usize>,
}

impl LineIndex {
    pub(super) fn build(text: &str, format: Format) -> Self {
        let lines = match format {
            Format::Yaml => yaml_lines(text),
            Format::Toml => toml_lines(text),
        };
        Self { lines }
    }

    /// The line of `key`, or of its closest ancestor.
    pub(super) fn line(&self, key: &str) -> Option<usize> {
        let mut k = key.to_owned();
        loop {
            if let Some(l) = self.lines.get(&k) {
                return Some(*l);
            }
            let cut = k.rfind(['.', '['])?;
            k.truncate(cut);
        }
    }
}

pub(super) fn join(stack: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (_, seg) in stack {
        if seg.starts_with('[') || out.is_empty() {
            out.push_str(seg);
        } else {
            out.push('.');
            out.push_str(seg);
        }
    }
    out
}

pub(super) fn yaml_lines(text: &str) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut counters: HashMap<String, usize> = HashMap::new();
    for (no, raw) in text.lines().enumerate() {
        let line = no + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut rest = trimmed;
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        while rest == "-" || rest.starts_with("- ") {
            let parent = join(&stack);
            let n = counters.entry(format!("{parent}@{indent}")).or_insert(0);
            stack.push((indent, format!("[{n}]")));
            *n += 1;
            map.entry(join(&stack)).or_insert(line);
            let after = rest.get(1..).unwrap_or("");
            let inner = after.trim_start();
            indent += 1 + after.len() - inner.len();
            rest = inner;
        }
        let key = rest
            .split_once(": ")
            .map(|(k, _)| k)
            .or_else(|| rest.strip_suffix(':'));
        if let Some(k) = key {
            let k = k.trim().trim_matches(['"', '\'']);
            stack.push((indent, k.to_owned()));
            map.entry(join(&stack)).or_insert(line);
        }
    }
    map
}

pub(super) fn toml_lines(text: &str) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    let mut table = String::new();
    let mut counters: HashMap<String, usize> = HashMap::new();
    for (no, raw) in text.lines().enumerate() {
        let line = no + 1;
        let t = raw.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let name = name.trim().to_owned();
            let n = counters.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
            map.entry(table.clone()).or_insert(line);
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.trim().to_owned();
            map.entry(table.clone()).or_insert(line);
        } else if let Some((k, _)) = t.split_once('=')
            && !t.starts_with('#')
        {
            let k = k.trim().trim_matches('"');
            let full = if table.is_empty() {
                k.to_owned()
            } else {
                format!("{table}.{k}")
            };
            map.entry(full).or_insert(line);
        }
    }
    map
}
