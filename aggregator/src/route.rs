//! Command routing to one host: the handle operators' calls use to send a
//! command down a host's stream and get its results back. The results'
//! table is owned by that stream's task (`link.rs`); this handle only sends
//! it messages, so routing shares no lock with anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleet_proto::v1::{AggregatorMessage, CommandResult, Hello, Resync, aggregator_message};
use tokio::sync::mpsc;

/// A host's limits as its Hello states them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message it decodes on the link.
    pub max_message: usize,
    /// Largest `send` text it accepts (none: not said).
    pub send_limit: Option<usize>,
}

impl Limits {
    /// What a hostd that says nothing decodes (protocol 1's default).
    pub const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;

    pub fn of(hello: &Hello) -> Self {
        let size = |v: u64| usize::try_from(v).ok().filter(|v| *v > 0);
        Self {
            max_message: size(hello.max_message_bytes).unwrap_or(Self::DEFAULT_MAX_MESSAGE),
            send_limit: size(hello.send_limit_bytes),
        }
    }
}

/// What a route's stream task is asked to do with its results' table.
#[derive(Debug)]
pub enum Call {
    /// Results for command `id` go to `to` (sent before the command goes
    /// down, so no answer can arrive unclaimed).
    Register {
        id: u64,
        to: mpsc::Sender<CommandResult>,
    },
    /// Forget command `id`.
    Forget(u64),
}

/// Why a link is being ended by the aggregator.
#[derive(Debug)]
pub struct Ending {
    pub why: String,
    /// Told to the host as the stream's final status (none: just closed).
    /// Boxed, like every message on a link's channels: a tokio channel
    /// allocates a block of 32 slots when it is made, and an aggregator
    /// makes a few per host link (see `Outbound`).
    pub status: Option<Box<tonic::Status>>,
}

/// What a link's task sends down its stream. Boxed: 32 slots of 8 bytes
/// is what each idle link holds, not 32 of a whole message.
pub type Outbound = Box<AggregatorMessage>;

/// The live stream to one hostd, as its callers see it.
#[derive(Clone)]
pub struct Route {
    pub id: u64,
    out: mpsc::Sender<Outbound>,
    calls: mpsc::Sender<Call>,
    ending: mpsc::Sender<Ending>,
    next_command: Arc<AtomicU64>,
    /// What the host said it accepts (its Hello).
    pub limits: Limits,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("id", &self.id).finish()
    }
}

/// The stream task's ends of a [`Route`].
pub struct Endpoints {
    pub calls: mpsc::Receiver<Call>,
    pub ending: mpsc::Receiver<Ending>,
}

impl Route {
    pub fn new(id: u64, out: mpsc::Sender<Outbound>, limits: Limits) -> (Self, Endpoints) {
        let (calls_tx, calls) = mpsc::channel(256);
        let (ending_tx, ending) = mpsc::channel(1);
        (
            Self {
                id,
                out,
                calls: calls_tx,
                ending: ending_tx,
                next_command: Arc::new(AtomicU64::new(1)),
                limits,
            },
            Endpoints { calls, ending },
        )
    }

    /// Sends `command` down (its id is assigned here) and returns the
    /// receiver of its results. `None` when the link is gone.
    pub async fn call(
        &self,
        mut command: fleet_proto::v1::Command,
        buffer: usize,
    ) -> Option<(u64, mpsc::Receiver<CommandResult>)> {
        let id = self.next_command.fetch_add(1, Ordering::Relaxed);
        command.id = id;
        let (tx, rx) = mpsc::channel(buffer.max(1));
        self.calls.send(Call::Register { id, to: tx }).await.ok()?;
        let msg = Box::new(AggregatorMessage {
            msg: Some(aggregator_message::Msg::Command(command)),
        });
        if self.out.send(msg).await.is_err() {
            let _ = self.calls.try_send(Call::Forget(id));
            return None;
        }
        Some((id, rx))
    }

    /// Stops a streaming command and forgets it.
    pub fn cancel(&self, id: u64) {
        let _ = self.calls.try_send(Call::Forget(id));
        let _ = self.out.try_send(Box::new(AggregatorMessage {
            msg: Some(aggregator_message::Msg::Cancel(fleet_proto::v1::Cancel {
                id,
            })),
        }));
    }

    /// Asks the host for a full snapshot.
    pub fn resync(&self, reason: &str) {
        let _ = self.out.try_send(Box::new(AggregatorMessage {
            msg: Some(aggregator_message::Msg::Resync(Resync {
                reason: reason.to_owned(),
            })),
        }));
    }

    /// Ends the stream: replaced, lease expired, or over its bounds.
    pub fn end(&self, why: impl Into<String>, status: Option<tonic::Status>) {
        let _ = self.ending.try_send(Ending {
            why: why.into(),
            status: status.map(Box::new),
        });
    }
}
