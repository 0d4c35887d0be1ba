//! `fleetctl send`: type a prompt into an agent and, with `--verify`, wait
//! for the verdict. The exit code is the verdict (see `exit`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use fleet_proto::v1::{SendReceipt, SendRequest, Verdict};

use crate::{Failure, client, exit};

/// Type a prompt into an agent: pasted through a tmux buffer (never a
/// shell), then Enter. With --verify, wait for the verdict: accepted (exit
/// 0; evidence "acknowledged" when the runtime's heartbeat turn advanced,
/// else "screen"), draft (3), unverifiable (4), queued (5).
///
/// Control bytes other than newline and tab are stripped; invalid UTF-8
/// and text over hostd's limit (64 KiB by default) are refused. A pane in
/// copy mode is taken out of it first; a dead pane is refused (the verb's
/// help in `lib.rs` says the rest).
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// AGENT, HOST/AGENT or TENANT/HOST/AGENT.
    pub agent: String,
    /// The text; `-` reads standard input.
    pub text: Option<String>,
    /// Read the text from a file.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Wait for the agent's verdict (exit code = verdict).
    #[arg(long)]
    pub verify: bool,
    /// Verification deadline after Enter [default: the server's, 6s].
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub verify_timeout: Option<Duration>,
    /// Paste only; leave the text as a draft.
    #[arg(long)]
    pub no_enter: bool,
    /// First wait (bounded) until the agent is not busy.
    #[arg(long)]
    pub when_idle: bool,
    /// Refuse multi-line text to a program without bracketed paste.
    #[arg(long)]
    pub strict: bool,
    /// Empty a stale draft in the input box (the runtime's clear key) before
    /// pasting, instead of refusing.
    #[arg(long)]
    pub clear_draft: bool,
    /// Bound on waiting for the agent's input queue and for a starting
    /// runtime's input box [default: the server's, 30s]. Every wait is
    /// clamped to 10m.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub queue_timeout: Option<Duration>,
    /// Print the receipt as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: crate::client::Conn,
}

/// Exit code for a receipt: only `accepted` (and unverified `delivered`) is 0.
pub fn verdict_code(r: &SendReceipt) -> u8 {
    match Verdict::try_from(r.verdict) {
        Ok(Verdict::Accepted | Verdict::Delivered) => exit::OK,
        Ok(Verdict::Draft) => exit::DRAFT,
        Ok(Verdict::Unverifiable) => exit::UNVERIFIABLE,
        Ok(Verdict::Queued) => exit::QUEUED,
        _ => exit::ERROR,
    }
}

pub fn receipt_json(r: &SendReceipt) -> serde_json::Value {
    serde_json::json!({
        "schema": "fleet.receipt/v1",
        "tenant_id": r.tenant_id,
        "host": r.host,
        "agent": r.agent,
        "verdict": Verdict::word_of(r.verdict),
        "evidence": r.evidence,
        "detail": r.detail,
        "elapsed_ms": r.elapsed_ms,
        "trace_id": r.trace_id,
        "bytes": r.bytes,
        "stripped": r.stripped,
        "bracketed_paste": r.bracketed_paste,
        "line_by_line": r.line_by_line,
        "left_copy_mode": r.left_copy_mode,
        "enter_presses": r.enter_presses,
        "queued_ms": r.queued_ms,
        "cleared_draft_bytes": r.cleared_draft_bytes,
        "enter_to_screen_ms": r.enter_to_screen_ms,
        "enter_to_ack_ms": r.enter_to_ack_ms,
        "notes": r.notes,
    })
}

pub fn receipt_text(r: &SendReceipt) -> String {
    let mut out = String::new();
    let evidence = if r.evidence.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.evidence)
    };
    out.push_str(&format!(
        "{}{evidence}: {}\n",
        Verdict::word_of(r.verdict),
        r.detail
    ));
    out.push_str(&format!(
        "  agent    {}/{}/{}\n",
        r.tenant_id, r.host, r.agent
    ));
    out.push_str(&format!(
        "  elapsed  {} ms · {} bytes · Enter ×{} · bracketed paste: {}{}\n",
        r.elapsed_ms,
        r.bytes,
        r.enter_presses,
        r.bracketed_paste,
        if r.left_copy_mode {
            " · left copy mode"
        } else {
            ""
        }
    ));
    out.push_str(&format!("  trace    {}\n", r.trace_id));
    for n in &r.notes {
        out.push_str(&format!("  note     {n}\n"));
    }
    out
}

fn read_text(a: &SendArgs) -> Result<Vec<u8>, Failure> {
    match (&a.text, &a.file) {
        (Some(_), Some(_)) => Err(Failure::Usage("give TEXT or --file, not both".into())),
        (Some(t), None) if t == "-" => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Ok(buf)
        }
        (Some(t), None) => Ok(t.as_bytes().to_vec()),
        (None, Some(f)) => std::fs::read(f)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", f.display()))),
        (None, None) => Err(Failure::Usage(
            "nothing to send: give TEXT, --file F, or - for standard input".into(),
        )),
    }
}

/// Sends and prints the receipt; returns the exit code.
pub async fn run(server: &client::Server, a: SendArgs) -> Result<u8, Failure> {
    let text = read_text(&a)?;
    let mut c = client::open(server).await?;
    // Unset waits go as zero: the server's defaults (`fleet_proto::waits`).
    let field = |d: Option<Duration>| d.map_or(0, fleet_proto::waits::field);
    let receipt = c
        .send(SendRequest {
            agent: a.agent.clone(),
            text,
            verify: a.verify,
            verify_timeout_ms: field(a.verify_timeout),
            no_enter: a.no_enter,
            when_idle: a.when_idle,
            when_idle_timeout_ms: 0,
            strict: a.strict,
            traceparent: crate::traceparent(),
            clear_draft: a.clear_draft,
            queue_timeout_ms: field(a.queue_timeout),
        })
        .await?
        .into_inner();
    print_receipt(&receipt, a.json)?;
    Ok(verdict_code(&receipt))
}

pub fn print_receipt(r: &SendReceipt, json: bool) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &receipt_json(r))?;
        writeln!(out)?;
    } else {
        let text = receipt_text(r);
        out.write_all(crate::render::printable(&text, true).as_bytes())?;
    }
    Ok(())
}

/// `5s`, `500ms`, `2.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: expected a duration such as 6s, 500ms or 2.5s");
    let (num, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => match s.strip_suffix('s') {
            Some(n) => (n, 1.0),
            None => (s, 1.0),
        },
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !(v.is_finite() && v > 0.0 && v * unit <= 3600.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("6s").unwrap(), Duration::from_secs(6));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn only_accepted_exits_zero() {
        let r = |v: Verdict| SendReceipt {
            verdict: v as i32,
            ..Default::default()
        };
        assert_eq!(verdict_code(&r(Verdict::Accepted)), 0);
        assert_eq!(verdict_code(&r(Verdict::Draft)), 3);
        assert_eq!(verdict_code(&r(Verdict::Unverifiable)), 4);
        assert_eq!(verdict_code(&r(Verdict::Queued)), 5);
    }
}
