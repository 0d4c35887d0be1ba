//! Built-in knowledge of agent runtimes: the command that starts each, the
//! process names it really runs as (pi and claude run as `node`), its reset
//! command, whether it uses bracketed paste, its native status mechanism
//! (DESIGN §13) and — in one table per runtime, [`Screen`] — every fact
//! about its screen that hostd reads: the input box, busy, queued and
//! waiting markers, placeholders and the key that clears the box. Recorded
//! on the real programs in tmux 3.3a (`hostd/tests/fixtures/screens/`).

use std::time::Duration;

/// A runtime's own mechanism for reporting its status (DESIGN §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    /// Claude Code: `--settings <file>` with command hooks.
    Claude,
    /// Codex: `-c hooks.<Event>=…` and `--dangerously-bypass-hook-trust`.
    Codex,
    /// gemini-cli: hooks in a system settings file.
    Gemini,
    /// opencode: a plugin listed in `OPENCODE_CONFIG_CONTENT`.
    Opencode,
    /// pi: an extension loaded with `-e`.
    Pi,
    /// aider: its notifications command (turn end only).
    Aider,
    /// None (the demo agent writes beats itself; a shell has nothing).
    None,
}

impl Native {
    /// The runtime name `fleetctl hook` is told.
    pub fn runtime(self) -> &'static str {
        match self {
            Native::Claude => "claude",
            Native::Codex => "codex",
            Native::Gemini => "gemini",
            Native::Opencode => "opencode",
            Native::Pi => "pi",
            Native::Aider => "aider",
            Native::None => "",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "claude" => Native::Claude,
            "codex" => Native::Codex,
            "gemini" => Native::Gemini,
            "opencode" => Native::Opencode,
            "pi" => Native::Pi,
            "aider" => Native::Aider,
            _ => return None,
        })
    }

    /// Whether the runtime reports the start of a turn (aider does not).
    pub fn reports_turn_start(self) -> bool {
        !matches!(self, Native::Aider | Native::None)
    }
}

/// How a runtime's input box is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxShape {
    /// A row starting with one of these prefixes (after any `│` border),
    /// continued on the rows below it up to a rule.
    Prefix(&'static [&'static str]),
    /// The rows between two horizontal rules around the cursor (pi).
    Ruled,
}

/// Everything hostd reads off one runtime's screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub input: BoxShape,
    /// Draws on the alternate screen (false: inline, with scrollback that
    /// keeps old lines — only the live region counts).
    pub alternate: bool,
    /// Rows above the input box that still belong to the live region (the
    /// spinner line).
    pub live_above: usize,
    /// A draft continues on indented rows below its prompt row (false: a
    /// line editor whose every row above the cursor is history).
    pub continued: bool,
    /// The box's prompt row sits right under a horizontal rule (Claude
    /// Code): a prefix row without one is the transcript's echo.
    pub rule_above: bool,
    /// Shown only while a turn runs, in the live region.
    pub busy: &'static [&'static str],
    /// Shown when a prompt was queued behind a running turn.
    pub queued: &'static [&'static str],
    /// Shown while the runtime is still starting and takes no prompt yet
    /// (its box may already be drawn).
    pub starting: &'static [&'static str],
    /// Shown while the runtime asks a human (permission, trust, question).
    pub waiting: &'static [&'static str],
    /// An inline runtime asks in its last rows: how many non-blank rows
    /// from the bottom to search for a question (a full-screen runtime's
    /// whole screen is searched).
    pub ask_rows: usize,
    /// Texts an empty input box shows (not a draft).
    pub placeholders: &'static [&'static str],
    /// tmux key names that empty the input box without submitting.
    pub clear_keys: &'static [&'static str],
    /// Press them again while the box still holds text (keys that are
    /// harmless on an empty box); false: once only (Ctrl-C twice quits).
    pub clear_repeat: bool,
    /// Whether the program reads its input while a turn runs; aider does
    /// not (typed text is only the tty's type-ahead).
    pub reads_while_busy: bool,
}

impl Screen {
    /// Rules for a program Fleet knows nothing about: a shell-like prompt
    /// on the cursor row, the generic markers.
    pub const GENERIC: Screen = Screen {
        input: BoxShape::Prefix(&[]),
        alternate: false,
        live_above: 2,
        continued: false,
        rule_above: false,
        busy: &[
            "esc to interrupt",
            "Esc to interrupt",
            "Working",
            "Thinking",
            "Waiting for",
            "retrying",
            "Retrying",
        ],
        queued: &[
            "Queued follow-up",
            "queued follow-up",
            "queued messages",
            "Press up to edit queued",
            "message queued",
            "Message queued",
        ],
        starting: &[],
        waiting: &[],
        ask_rows: 3,
        placeholders: &[],
        clear_keys: &[],
        clear_repeat: false,
        reads_while_busy: true,
    };
}

pub const CLAUDE_SCREEN: Screen = Screen {
    input: BoxShape::Prefix(&["❯", ">"]),
    alternate: true,
    live_above: 3,
    continued: true,
    rule_above: true,
    busy: &["esc to interrupt", "· retrying in", "Retrying in"],
    queued: &[
        "Press up to edit queued",
        "Queued · ctrl+x",
        "queued messages",
    ],
    starting: &[],
    waiting: &[
        "Do you want to proceed?",
        "Do you want to make this edit",
        "Do you want to create",
        "Do you want to allow",
        "Do you trust the files in this folder?",
        "Yes, I trust this folder",
    ],
    ask_rows: 40,
    placeholders: &["Press up to edit queued messages", "Try \""],
    // C-u deletes a line (two presses per line), harmless on an empty box;
    // Ctrl-C would clear too, but a second one within a second quits.
    clear_keys: &["C-u"],
    clear_repeat: true,
    reads_while_busy: true,
};

pub const CODEX_SCREEN: Screen = Screen {
    input: BoxShape::Prefix(&["›"]),
    alternate: true,
    live_above: 6,
    continued: true,
    rule_above: false,
    busy: &["esc to interrupt", "Reconnecting", "Working ("],
    queued: &[
        "Queued follow-up",
        "Messages to be submitted after next tool call",
        "queued follow-up",
        // A prompt Enter-ed before the session is up waits for it.
        "Waiting for startup",
    ],
    starting: &["Waiting for startup"],
    waiting: &[
        "Would you like to run the following command?",
        "Would you like to make the following edits?",
        "Allow command?",
        "Trust this folder?",
        "Hooks need review",
        "Do you trust the contents of this directory?",
        "Press enter to confirm or esc to cancel",
    ],
    ask_rows: 40,
    placeholders: &[
        "Ask Codex to do anything",
        "Find and fix a bug in @filename",
        "Improve documentation in @filename",
        "Summarize recent commits",
        "Explain this codebase",
        "Write tests for @filename",
        "Implement {feature}",
        "Use /skills to list available skills",
        "Run /review on my current changes",
    ],
    // Ctrl-C on an empty idle box quits Codex: C-u, repeated.
    clear_keys: &["C-u"],
    clear_repeat: true,
    reads_while_busy: true,
};

pub const OPENCODE_SCREEN: Screen = Screen {
    input: BoxShape::Prefix(&["┃"]),
    alternate: true,
    live_above: 6,
    continued: true,
    rule_above: false,
    busy: &[
        "esc interrupt",
        "esc again to interrupt",
        "[retrying in",
        "esc to interrupt",
    ],
    queued: &["QUEUED"],
    starting: &[],
    waiting: &["Permission required", "Allow once   Allow always"],
    ask_rows: 40,
    placeholders: &["Ask anything"],
    clear_keys: &["C-c"],
    clear_repeat: false,
    reads_while_busy: true,
};

pub const PI_SCREEN: Screen = Screen {
    input: BoxShape::Ruled,
    alternate: false,
    live_above: 3,
    continued: true,
    rule_above: false,
    busy: &["Working...", "Retrying (", "Running... (escape"],
    queued: &["Steering:", "edit all queued messages"],
    // pi itself never asks; an extension's dialog replaces the box.
    starting: &[],
    waiting: &["↑↓ navigate  enter select"],
    ask_rows: 10,
    placeholders: &[],
    clear_keys: &["C-c"],
    clear_repeat: false,
    reads_while_busy: true,
};

pub const GEMINI_SCREEN: Screen = Screen {
    input: BoxShape::Prefix(&[">", "*"]),
    alternate: false,
    live_above: 4,
    continued: true,
    rule_above: false,
    // Ink leaves redraw debris in the status row: match the stem.
    busy: &["esc to c", "Thinking..."],
    queued: &["Queued (press ↑ to edit)"],
    starting: &[],
    waiting: &[
        "Do you trust this folder?",
        "Do you trust the files in this folder?",
        "Trust folder",
        "Allow execution",
        "Apply this change?",
        "Waiting for user confirmation",
    ],
    ask_rows: 16,
    placeholders: &["Type your message or @path/to/file"],
    clear_keys: &["C-c"],
    clear_repeat: false,
    reads_while_busy: true,
};

pub const AIDER_SCREEN: Screen = Screen {
    input: BoxShape::Prefix(&[">"]),
    alternate: false,
    live_above: 0,
    continued: false,
    rule_above: false,
    busy: &["Waiting for", "Retrying in", "Thinking"],
    queued: &[],
    starting: &[],
    waiting: &["(Y)es/(N)o", "[Yes]:", "(Y)es"],
    ask_rows: 1,
    placeholders: &[],
    // Ctrl-C would arm exit; to the end, then C-u per line.
    clear_keys: &["C-End", "C-u"],
    clear_repeat: true,
    reads_while_busy: false,
};

pub const DEMO_SCREEN: Screen = Screen {
    input: BoxShape::Prefix(&["demo>"]),
    alternate: false,
    live_above: 0,
    continued: false,
    rule_above: false,
    busy: &["working on:"],
    queued: &[],
    starting: &[],
    waiting: &["[y/n]"],
    ask_rows: 1,
    placeholders: &[],
    clear_keys: &["C-u"],
    clear_repeat: false,
    reads_while_busy: false,
};

pub const SHELL_SCREEN: Screen = Screen {
    input: BoxShape::Prefix(&[]),
    alternate: false,
    live_above: 0,
    continued: false,
    rule_above: false,
    busy: &[],
    queued: &[],
    starting: &[],
    waiting: &[],
    ask_rows: 1,
    placeholders: &[],
    clear_keys: &["C-u"],
    clear_repeat: false,
    reads_while_busy: true,
};

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
    pub native: Native,
    pub screen: &'static Screen,
    /// Longest a start-up takes to the input box (a send waits this long).
    pub startup: Duration,
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
        native: Native::Aider,
        screen: &AIDER_SCREEN,
        startup: Duration::from_secs(30),
    },
    Builtin {
        name: "claude",
        command: "claude",
        process_names: &["claude", "node"],
        reset_command: Some("/clear"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
        native: Native::Claude,
        screen: &CLAUDE_SCREEN,
        startup: Duration::from_secs(60),
    },
    Builtin {
        name: "codex",
        command: "codex",
        process_names: &["codex", "node"],
        reset_command: Some("/new"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
        native: Native::Codex,
        screen: &CODEX_SCREEN,
        startup: Duration::from_secs(60),
    },
    Builtin {
        name: "demo",
        command: "fleet-demo-agent",
        process_names: &["fleet-demo-agent"],
        reset_command: None,
        // Canonical tty mode: no bracketed paste, no paste guard.
        bracketed_paste: Some(false),
        submit_gap: ms(20),
        native: Native::None,
        screen: &DEMO_SCREEN,
        startup: Duration::from_secs(5),
    },
    Builtin {
        name: "gemini",
        command: "gemini",
        process_names: &["gemini", "node"],
        reset_command: Some("/clear"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
        native: Native::Gemini,
        screen: &GEMINI_SCREEN,
        startup: Duration::from_secs(60),
    },
    Builtin {
        name: "opencode",
        command: "opencode",
        process_names: &["opencode", "node", "bun"],
        reset_command: Some("/new"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
        native: Native::Opencode,
        screen: &OPENCODE_SCREEN,
        startup: Duration::from_secs(90),
    },
    Builtin {
        name: "pi",
        command: "pi",
        process_names: &["pi", "node"],
        reset_command: Some("/new"),
        bracketed_paste: Some(true),
        submit_gap: ms(150),
        native: Native::Pi,
        screen: &PI_SCREEN,
        startup: Duration::from_secs(30),
    },
    Builtin {
        name: "shell",
        command: "bash",
        process_names: &["bash", "sh", "dash", "zsh", "fish"],
        reset_command: None,
        // bash ≥ 5.1 (readline 8.1) turns bracketed paste on by default.
        bracketed_paste: Some(true),
        submit_gap: ms(50),
        native: Native::None,
        screen: &SHELL_SCREEN,
        startup: Duration::from_secs(5),
    },
];

/// Shells without a line editor that knows bracketed paste: whatever the
/// runtime says, text pasted into them arrives without the markers.
const NO_BRACKETED_PASTE: &[&str] = &["dash", "sh", "ash", "busybox"];

/// Whether the program in the pane uses bracketed paste: the runtime's
/// word, unless the process running is known not to.
pub fn bracketed_paste(declared: Option<bool>, process: Option<&str>) -> Option<bool> {
    match process {
        Some(p) if NO_BRACKETED_PASTE.contains(&p) => Some(false),
        _ => declared,
    }
}

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
