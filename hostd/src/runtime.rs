//! Built-in knowledge of agent runtimes: the command that starts each, the
//! process names it really runs as (pi and claude run as `node`), its reset
//! command, and whether it uses bracketed paste.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Builtin {
    pub name: &'static str,
    pub command: &'static str,
    pub process_names: &'static [&'static str],
    pub reset_command: Option<&'static str>,
    /// Whether the program enables bracketed paste (tmux 3.3a cannot tell).
    pub bracketed_paste: Option<bool>,
    /// Gap between the draft showing and Enter (paste guards).
    pub submit_gap: Duration,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "aider",
        command: "aider",
        process_names: &["aider", "python3", "python"],
        reset_command: Some("/clear"),
        bracketed_paste: Some(true),
        submit_gap: ms(100),
    },
    Builtin {
        name: "claude",
        command: "claude",
        process_names: &["claude", "node"],
        reset_command: Some("/clear"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
    },
    Builtin {
        name: "codex",
        command: "codex",
        process_names: &["codex", "node"],
        reset_command: Some("/new"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
    },
    Builtin {
        name: "demo",
        command: "fleet-demo-agent",
        process_names: &["fleet-demo-agent"],
        reset_command: None,
        // Canonical tty mode: no bracketed paste, no paste guard.
        bracketed_paste: Some(false),
        submit_gap: ms(20),
    },
    Builtin {
        name: "gemini",
        command: "gemini",
        process_names: &["gemini", "node"],
        reset_command: Some("/clear"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
    },
    Builtin {
        name: "opencode",
        command: "opencode",
        process_names: &["opencode", "node", "bun"],
        reset_command: Some("/new"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
    },
    Builtin {
        name: "pi",
        command: "pi",
        process_names: &["pi", "node"],
        reset_command: Some("/new"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
    },
    Builtin {
        name: "shell",
        command: "bash",
        process_names: &["bash", "sh", "dash", "zsh", "fish"],
        reset_command: None,
        // bash ≥ 5.1 (readline 8.1) turns bracketed paste on by default.
        bracketed_paste: Some(true),
        submit_gap: ms(50),
    },
];

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// Default gap for runtimes Fleet knows nothing about (DESIGN §5: ≥ 100 ms).
pub const DEFAULT_SUBMIT_GAP: Duration = ms(100);

/// The process name a custom command runs as: its first word's basename.
pub fn process_name_of(command: &str) -> Option<String> {
    let first = command.split_whitespace().find(|w| !w.contains('='))?;
    first.rsplit('/').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_runtimes_list_node() {
        for r in ["claude", "pi", "codex", "gemini", "opencode"] {
            assert!(builtin(r).unwrap().process_names.contains(&"node"), "{r}");
        }
    }

    #[test]
    fn custom_process_names() {
        assert_eq!(
            process_name_of("/usr/bin/python3 -q").as_deref(),
            Some("python3")
        );
        assert_eq!(process_name_of("FOO=1 sleep 9").as_deref(), Some("sleep"));
        assert_eq!(process_name_of("  "), None);
    }

    #[test]
    fn every_default_gap_honours_the_paste_guard_rule_for_tuis() {
        for b in BUILTINS
            .iter()
            .filter(|b| b.process_names.contains(&"node"))
        {
            assert!(b.submit_gap >= Duration::from_millis(100), "{}", b.name);
        }
    }
}
