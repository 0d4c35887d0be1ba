//! The `fleet.v1.Fleet` service as hostd serves it: every answer comes from
//! the published [`View`] and the event log, never from a tmux round trip.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fleet_proto::v1::fleet_server::Fleet;
use fleet_proto::v1::{
    AgentKey, AgentRow, Delta, Event, EventsRequest, FleetUpdate, ListAgentsRequest,
    ListAgentsResponse, ListHostsRequest, ListHostsResponse, Snapshot, WatchFleetRequest,
    fleet_update,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::clock;
use crate::events::EventLog;
use crate::table::View;

/// Per-stream buffer; a client this far behind is shed.
const STREAM_BUFFER: usize = 64;

#[derive(Clone)]
pub struct FleetService {
    pub view: watch::Receiver<Arc<View>>,
    pub events: EventLog,
    pub epoch: u64,
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn list_agents(
        &self,
        _req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let view = self.view.borrow().clone();
        Ok(Response::new(ListAgentsResponse {
            agents: view.agents.clone(),
            generated_at_unix_ms: clock::now_ms(),
        }))
    }

    async fn list_hosts(
        &self,
        _req: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let view = self.view.borrow().clone();
        Ok(Response::new(ListHostsResponse {
            hosts: vec![view.host.clone()],
            generated_at_unix_ms: clock::now_ms(),
        }))
    }

    type WatchFleetStream = Streamed<FleetUpdate>;

    async fn watch_fleet(
        &self,
        _req: Request<WatchFleetRequest>,
    ) -> Result<Response<Self::WatchFleetStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut view = self.view.clone();
        let epoch = self.epoch;
        tokio::spawn(async move {
            let mut seq = 0u64;
            let mut prev = view.borrow_and_update().clone();
            let first = FleetUpdate {
                epoch,
                seq,
                update: Some(fleet_update::Update::Snapshot(Snapshot {
                    agents: prev.agents.clone(),
                    hosts: vec![prev.host.clone()],
                })),
                generated_at_unix_ms: clock::now_ms(),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            // The watch channel keeps only the newest view, so a slow client
            // skips intermediate states instead of growing a queue.
            while view.changed().await.is_ok() {
                let next = view.borrow_and_update().clone();
                let delta = diff(&prev, &next);
                prev = next;
                let Some(delta) = delta else { continue };
                seq += 1;
                let update = FleetUpdate {
                    epoch,
                    seq,
                    update: Some(fleet_update::Update::Delta(delta)),
                    generated_at_unix_ms: clock::now_ms(),
                };
                if !offer(&tx, update).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type EventsStream = Streamed<Event>;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let req = req.into_inner();
        if !req.agent.is_empty() {
            fleet_proto::name::check(&req.agent)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let (backlog, mut live) = self.events.subscribe(req.after_seq);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let wanted = move |e: &Event| req.agent.is_empty() || e.agent == req.agent;
        tokio::spawn(async move {
            for e in backlog.into_iter().filter(|e| wanted(e)) {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if !req.follow {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(e) if wanted(&e) => {
                        if !offer(&tx, e).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "event stream fell {n} events behind; reconnect with after_seq"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Queues one message, or sheds a client whose buffer is full: it gets
/// `RESOURCE_EXHAUSTED` and should call again for a fresh snapshot.
async fn offer<T>(tx: &mpsc::Sender<Result<T, Status>>, item: T) -> bool {
    match tx.try_send(Ok(item)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let shed = Status::resource_exhausted("client too slow; call again to resync");
            let _ = tx.send_timeout(Err(shed), Duration::from_secs(1)).await;
            false
        }
    }
}

/// Rows that changed or vanished between two views; `None` when nothing did.
pub fn diff(prev: &View, next: &View) -> Option<Delta> {
    let old: HashMap<&str, &AgentRow> = prev.agents.iter().map(|r| (r.name.as_str(), r)).collect();
    let upserts: Vec<AgentRow> = next
        .agents
        .iter()
        .filter(|r| old.get(r.name.as_str()) != Some(r))
        .cloned()
        .collect();
    let new: std::collections::HashSet<&str> =
        next.agents.iter().map(|r| r.name.as_str()).collect();
    let removals: Vec<AgentKey> = prev
        .agents
        .iter()
        .filter(|r| !new.contains(r.name.as_str()))
        .map(|r| AgentKey {
            tenant_id: r.tenant_id.clone(),
            host: r.host.clone(),
            name: r.name.clone(),
        })
        .collect();
    let mut host_prev = prev.host.clone();
    host_prev.last_seen_unix_ms = next.host.last_seen_unix_ms;
    let hosts = if host_prev == next.host {
        vec![]
    } else {
        vec![next.host.clone()]
    };
    if upserts.is_empty() && removals.is_empty() && hosts.is_empty() {
        None
    } else {
        Some(Delta {
            upserts,
            removals,
            hosts,
        })
    }
}
