//! Named client contexts, as kubectl's: `~/.config/fleet/fleetctl.toml`
//! holds an aggregator's address, CA, certificate, key and server name
//! under a name, so an operator says `--context prod` (or
//! `FLEET_CONTEXT=prod`, or the file's `current-context`) instead of five
//! variables. Flags and `FLEET_*` variables still win, field by field.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Failure;
use crate::client::Remote;

/// Largest contexts file read (it holds a few paths per context).
const MAX_FILE: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "current-context", default)]
    current: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, Context>,
}

/// One context. Relative paths are relative to the file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub aggregator: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(rename = "server-name", default)]
    pub server_name: Option<String>,
}

/// Where the file is: `FLEET_CONFIG`, else `$XDG_CONFIG_HOME/fleet/`,
/// else `~/.config/fleet/`.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLEET_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("fleet").join("fleetctl.toml"))
}

/// Reads the file: `None` when there is none. A FIFO, a device or a huge
/// file is refused without being opened for reading.
fn load(path: &Path) -> Result<Option<File>, Failure> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Failure::Usage(format!("{}: {e}", path.display()))),
    };
    if !meta.is_file() {
        return Err(Failure::Usage(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX_FILE {
        return Err(Failure::Usage(format!(
            "{}: {} bytes is too big for a contexts file",
            path.display(),
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    let file: File = toml::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{}: {}", path.display(), e.message())))?;
    Ok(Some(file))
}

/// `remote` with the chosen context's values where flags and variables
/// gave none. A context is chosen by `--context`/`FLEET_CONTEXT`, else by
/// the file's `current-context` when neither an aggregator nor a socket
/// was given.
pub fn apply(mut remote: Remote, socket_given: bool) -> Result<Remote, Failure> {
    let explicit = remote.context.clone();
    if explicit.is_none() && (remote.aggregator.is_some() || socket_given) {
        return Ok(remote);
    }
    let Some(path) = path() else {
        return match explicit {
            Some(n) => Err(Failure::Usage(format!(
                "no context {n:?}: set HOME or FLEET_CONFIG to find fleetctl.toml"
            ))),
            None => Ok(remote),
        };
    };
    let file = load(&path)?;
    let name = match (&explicit, &file) {
        (Some(n), _) => n.clone(),
        (
            None,
            Some(File {
                current: Some(c), ..
            }),
        ) => c.clone(),
        (None, _) => return Ok(remote),
    };
    let Some(file) = file else {
        return Err(Failure::Usage(format!(
            "no context {name:?}: {} does not exist (see `fleetctl contexts --help`)",
            path.display()
        )));
    };
    let Some(ctx) = file.contexts.get(&name) else {
        let known: Vec<_> = file.contexts.keys().map(String::as_str).collect();
        return Err(Failure::Usage(format!(
            "no context {name:?} in {} (known: {})",
            path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            dir.join(p)
        }
    };
    remote
        .aggregator
        .get_or_insert_with(|| ctx.aggregator.clone());
    remote.ca.get_or_insert_with(|| abs(&ctx.ca));
    remote.cert.get_or_insert_with(|| abs(&ctx.cert));
    remote.key.get_or_insert_with(|| abs(&ctx.key));
    if remote.server_name.is_none() {
        remote.server_name.clone_from(&ctx.server_name);
    }
    remote.context = Some(name);
    Ok(remote)
}

/// `fleetctl contexts`: the file's contexts, the current one marked.
pub fn list(json: bool) -> Result<(), Failure> {
    let path = path().ok_or_else(|| {
        Failure::Usage("cannot tell where fleetctl.toml is: set HOME or FLEET_CONFIG".into())
    })?;
    let file = load(&path)?;
    let (current, contexts) = file.map_or((None, BTreeMap::new()), |f| (f.current, f.contexts));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let rows: Vec<_> = contexts
            .iter()
            .map(|(n, c)| {
                serde_json::json!({
                    "name": n,
                    "current": current.as_deref() == Some(n.as_str()),
                    "aggregator": c.aggregator,
                    "ca": c.ca, "cert": c.cert, "key": c.key,
                    "server_name": c.server_name,
                })
            })
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"schema": "fleet.contexts/v1", "file": path, "contexts": rows}),
        )?;
        writeln!(out)?;
    } else if contexts.is_empty() {
        writeln!(out, "no contexts in {}", path.display())?;
    } else {
        use crate::render::{Colour, Column};
        let cols = ["CURRENT", "NAME", "AGGREGATOR", "SERVER-NAME"].map(|h| Column {
            header: h,
            priority: 5,
        });
        let rows: Vec<Vec<crate::render::Cell>> = contexts
            .iter()
            .map(|(n, c)| {
                let is = current.as_deref() == Some(n.as_str());
                vec![
                    ((if is { "*" } else { "" }).to_owned(), Colour::None),
                    (n.clone(), Colour::None),
                    (c.aggregator.clone(), Colour::None),
                    (
                        c.server_name.clone().unwrap_or_else(|| "-".into()),
                        Colour::None,
                    ),
                ]
            })
            .collect();
        out.write_all(
            crate::render::table(&cols, &rows, crate::render::Style::for_stdout()).as_bytes(),
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_fills_what_flags_left_out_with_paths_from_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fleetctl.toml");
        std::fs::write(
            &p,
            "current-context = \"lab\"\n\
             [contexts.lab]\naggregator = \"127.0.0.1:7443\"\nca = \"ca.pem\"\n\
             cert = \"/abs/op.pem\"\nkey = \"op.key\"\nserver-name = \"aggregator.fleet\"\n",
        )
        .unwrap();
        let file = load(&p).unwrap().unwrap();
        assert_eq!(file.current.as_deref(), Some("lab"));
        assert_eq!(
            file.contexts["lab"].server_name.as_deref(),
            Some("aggregator.fleet")
        );
        std::fs::write(&p, "[contexts.lab]\naggregator = 1\n").unwrap();
        assert!(matches!(load(&p), Err(Failure::Usage(_))));
        std::fs::write(&p, "surprise = true\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("surprise"), "{e}");
        assert!(load(&dir.path().join("none.toml")).unwrap().is_none());
        assert!(matches!(load(dir.path()), Err(Failure::Usage(_))));
    }
}
