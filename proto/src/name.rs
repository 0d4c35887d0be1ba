//! Agent names: the one check every peer applies before a name touches a
//! file path, a tmux target or a wire address.

use std::fmt;

/// Longest accepted agent name, in bytes.
pub const MAX_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("agent name is empty")]
    Empty,
    /// The name's start (a hostile name is never echoed whole) and length.
    #[error("agent name {0:?}… ({1} bytes) is longer than {MAX_LEN} bytes")]
    TooLong(String, usize),
    #[error(
        "agent name {0:?} is not allowed: use letters, digits, '_' and '-', starting with a letter or digit (tmux rewrites '.' and ':' and paths must not escape)"
    )]
    Invalid(String),
}

/// A checked agent name: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
///
/// No `.` (tmux rewrites it, and `..` escapes paths), no `:` (tmux target
/// syntax), no `/`, no leading `-` (would read as a flag).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        check(name)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `name` against the agent-name grammar.
pub fn check(name: &str) -> Result<(), NameError> {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return Err(NameError::Empty);
    };
    if name.len() > MAX_LEN {
        let mut cut = MAX_LEN.min(name.len());
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(NameError::TooLong(name[..cut].to_owned(), name.len()));
    }
    let ok_rest = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !first.is_ascii_alphanumeric() || !bytes.all(ok_rest) {
        return Err(NameError::Invalid(name.to_owned()));
    }
    Ok(())
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        check(&value)?;
        Ok(Self(value))
    }
}

impl<'de> serde::Deserialize<'de> for AgentName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AgentName::try_from(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "coder0",
            "orchestrator",
            "a",
            "A-b_c",
            "0x",
            &"a".repeat(64),
        ] {
            assert!(check(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_path_and_tmux_specials() {
        for n in [
            "",
            "../x",
            "a:b",
            "a.b",
            ".",
            "..",
            "-x",
            "_x",
            "a/b",
            "a b",
            "a;b",
            "a$b",
            "=a",
            "%1",
            "@1",
            "$1",
            "a\nb",
            "ä",
            &"a".repeat(65),
        ] {
            assert!(check(n).is_err(), "{n:?} should be refused");
        }
    }
}
