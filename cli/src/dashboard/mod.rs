//! `fleetctl dashboard`: a read-only web view of the fleet, served on
//! loopback to the operator's own browser. It owns the HTTP side only: it
//! reaches hostd or the aggregator with the operator's identity through
//! `client::open`, like every other verb (the kubectl-proxy pattern), so
//! it adds no authentication surface to either. Every endpoint is a GET
//! that reads; nothing here can send, attach or control. The page and its
//! script are embedded (`assets/`), live data arrives as server-sent events
//! fed from `WatchFleet`, `Events` and `WatchScreen`.

mod ansi;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleet_proto::v1::fleet_client::FleetClient;
use fleet_proto::v1::{
    EventsRequest, ScreenFrame, Selector, SummaryRequest, WatchFleetRequest, WatchScreenRequest,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use crate::mirror::{Broken, Mirror};
use crate::{Failure, client};

/// Serve a read-only web dashboard on loopback.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Address to listen on (loopback only: 127.0.0.1, ::1).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Live streams (one page holds three) served at once; more are 503.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_streams: u32,
    /// The most agent rows one page is sent. A selection matching more is
    /// shown as a count with the summary (counted again every 2 s): narrow
    /// it with the page's filters.
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub max_rows: usize,
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// No inline script or style, nothing from anywhere but this origin, no
/// framing, no forms.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Rows of one frame sent to the page, at most.
const MAX_SCREEN_LINES: usize = 500;
/// Events of the backlog the page starts from: the last hour.
const BACKLOG_MS: i64 = 3_600_000;
/// How often a changed view is sent at most (changes in between coalesce).
const FLEET_COALESCE: Duration = Duration::from_millis(100);
/// A summary is asked for at most this often, and only after a change.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// The page's EventSource reconnects after this long when a stream ends.
const RETRY: Duration = Duration::from_secs(1);

struct App {
    client: FleetClient<Channel>,
    token: String,
    cookie: String,
    /// The Host headers this server answers to (DNS rebinding).
    hosts: Vec<String>,
    streams: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    max_rows: usize,
}

pub async fn run(server: &client::Server, args: DashboardArgs) -> Result<(), Failure> {
    let addr: SocketAddr = args.listen.parse().map_err(|_| {
        Failure::Usage(format!(
            "--listen {:?}: expected a loopback IP:PORT such as 127.0.0.1:0",
            args.listen
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(Failure::Usage(format!(
            "--listen {addr}: the dashboard serves loopback only (127.0.0.1 or ::1); it acts with your identity"
        )));
    }
    let client = client::open(server).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let token = random_token();
    let (stop_tx, stop) = watch::channel(false);
    let app = Arc::new(App {
        client,
        cookie: format!("fleet_dashboard_{}", local.port()),
        token,
        hosts: vec![local.to_string(), format!("localhost:{}", local.port())],
        streams: Arc::new(Semaphore::new(args.max_streams as usize)),
        stop: stop.clone(),
        max_rows: args.max_rows,
    });
    let url = format!("http://{local}/?token={}", app.token);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{url}")?;
        out.flush()?;
    }
    eprintln!("fleetctl dashboard: read-only, on {local} (Ctrl-C to stop)");
    let router = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/summary", get(summary))
        .route("/api/fleet", get(fleet_stream))
        .route("/api/events", get(events_stream))
        .route("/api/screen", get(screen_stream))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app);
    tokio::spawn(async move {
        stop_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut done = stop.clone();
    let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = done.wait_for(|s| *s).await;
    });
    let mut stopping = stop;
    tokio::select! {
        r = std::future::IntoFuture::into_future(serve) => r?,
        // Streams end on the signal; a connection that lingers past this
        // is cut with the process.
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => {}
    }
    Ok(())
}

async fn stop_signal() {
    if fleet_net::signal::stop_requested().await.is_err() {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// 32 random bytes, hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal in time whatever the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn query_token(req: &Request) -> Option<&str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
}

fn cookie_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Every request: only GET (and HEAD), only to this server's own name,
/// only with the token (in the URL once, then the cookie). Every answer,
/// refusals included, carries the security headers.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut resp = check(&app, req, next).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The token is in the first URL: never pass it on.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

async fn check(app: &App, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only: GET only",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let host_ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| app.hosts.iter().any(|ok| ok == h));
    if !host_ok {
        return plain(StatusCode::MISDIRECTED_REQUEST, "unknown Host");
    }
    let by_query = query_token(&req).is_some_and(|t| same(t, &app.token));
    let by_cookie = cookie_token(req.headers(), &app.cookie).is_some_and(|t| same(t, &app.token));
    if !(by_query || by_cookie) {
        return plain(
            StatusCode::UNAUTHORIZED,
            "no dashboard token: open the URL fleetctl dashboard printed",
        );
    }
    let mut resp = next.run(req).await;
    if by_query && !by_cookie {
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            app.cookie, app.token
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

fn plain(code: StatusCode, text: &'static str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found")
}

fn json_response(v: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// What a failed read says to the page.
fn failure_response(e: &Failure) -> Response {
    let code = match e {
        Failure::Usage(_) => StatusCode::BAD_REQUEST,
        Failure::Status(s) if s.code() == tonic::Code::NotFound => StatusCode::NOT_FOUND,
        Failure::Status(s) if s.code() == tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_GATEWAY,
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": e.to_string()}).to_string(),
    )
        .into_response()
}

/// The selection in a query string, in the words `fleetctl ps` takes:
/// `name`, `tenant`, `host`, `health`, `status`, `pane`, `flag`, each
/// comma-separated. Checked as the server would before any request.
fn selector(q: &BTreeMap<String, String>) -> Result<Option<Selector>, Failure> {
    crate::select::SelectArgs::from_query(q)
        .map_err(Failure::Usage)?
        .check()
}

/// The selector of a request's query, as an extractor: a bad one is the
/// request's answer.
struct Selection(Option<Selector>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Selection {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        let Query(q) = Query::<BTreeMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| failure_response(&Failure::Usage(e.body_text())))?;
        selector(&q)
            .map(Selection)
            .map_err(|e| failure_response(&e))
    }
}

async fn summary(State(app): State<Arc<App>>, Selection(selector): Selection) -> Response {
    let mut c = app.client.clone();
    match c.summarize(SummaryRequest { selector }).await {
        Ok(s) => json_response(&crate::ps::summary_json(&s.into_inner())),
        Err(e) => failure_response(&Failure::Status(e)),
    }
}

fn sse_event(kind: &'static str, v: &impl serde::Serialize) -> Option<SseEvent> {
    // JSON text has no raw newline: one `data:` line per event.
    serde_json::to_string(v)
        .ok()
        .map(|s| SseEvent::default().event(kind).data(s))
}

/// A live stream: `work` writes events into the channel until it fails,
/// the page goes away or the dashboard stops. One permit of the bounded
/// pool is held for the stream's life; none left is a 503.
fn stream_response<F, Fut>(app: &Arc<App>, work: F) -> Response
where
    F: FnOnce(mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live streams; close a dashboard tab",
        );
    };
    let (tx, rx) = mpsc::channel::<SseEvent>(16);
    let job = work(tx.clone());
    let mut stop = app.stop.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tx.send(SseEvent::default().retry(RETRY)).await;
        tokio::select! {
            r = job => {
                if let Err(e) = r
                    && let Some(ev) = sse_event("problem", &serde_json::json!({"error": e.to_string()}))
                {
                    let _ = tx.send(ev).await;
                }
            }
            _ = tx.closed() => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {}
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Sends one event; `false` once the page is gone.
async fn send(tx: &mpsc::Sender<SseEvent>, kind: &'static str, v: &impl serde::Serialize) -> bool {
    match sse_event(kind, v) {
        Some(ev) => tx.send(ev).await.is_ok(),
        None => true,
    }
}

/// `/api/fleet`: the selected rows (`fleet.ps/v1` documents, `fleet`
/// events) and the summary (`fleet.summary/v1`, `summary` events), each
/// sent again after a change.
async fn fleet_stream(State(app): State<Arc<App>>, Selection(selector): Selection) -> Response {
    let client = app.client.clone();
    let max_rows = app.max_rows;
    stream_response(&app, move |tx| pump_fleet(client, selector, max_rows, tx))
}

/// How often a selection too big for the page is counted again.
const RECOUNT_EVERY: Duration = Duration::from_secs(2);

/// How a watch of the fleet ended without an error.
enum Watched {
    PageGone,
    /// More rows matched than the page is sent: count again.
    TooMany,
}

async fn pump_fleet(
    mut client: FleetClient<Channel>,
    selector: Option<Selector>,
    max_rows: usize,
    tx: mpsc::Sender<SseEvent>,
) -> Result<(), Failure> {
    loop {
        // Counted first: a selection the page may not hold is a count.
        let s = tokio::time::timeout(
            Duration::from_secs(5),
            client.summarize(SummaryRequest {
                selector: selector.clone(),
            }),
        )
        .await
        .map_err(|_| Failure::Unavailable("no summary in time".into()))??
        .into_inner();
        let matched = s.total.unwrap_or_default().agents;
        if matched as usize > max_rows {
            let too_many = serde_json::json!({"matched": matched, "limit": max_rows});
            if !send(&tx, "summary", &crate::ps::summary_json(&s)).await
                || !send(&tx, "too_many", &too_many).await
            {
                return Ok(());
            }
            tokio::time::sleep(RECOUNT_EVERY).await;
            continue;
        }
        match watch_fleet(&mut client, selector.clone(), max_rows, &tx).await? {
            Watched::PageGone => return Ok(()),
            Watched::TooMany => continue,
        }
    }
}

/// Sends the selected view after each change (coalesced) and the summary
/// after a change (at most once a second).
async fn watch_fleet(
    client: &mut FleetClient<Channel>,
    selector: Option<Selector>,
    max_rows: usize,
    tx: &mpsc::Sender<SseEvent>,
) -> Result<Watched, Failure> {
    let mut stream = client
        .watch_fleet(WatchFleetRequest {
            selector: selector.clone(),
        })
        .await?
        .into_inner();
    let mut fleet = Mirror::new(max_rows);
    let mut dirty = false;
    let mut summary_dirty = true;
    let mut summary_due = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(FLEET_COALESCE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(update) = msg? else {
                    return Err(Failure::Unavailable("the server closed the watch stream".into()));
                };
                match fleet.apply(update) {
                    Ok(changed) => dirty |= changed,
                    Err(Broken::TooMany { .. }) => return Ok(Watched::TooMany),
                    Err(Broken::Gap) => {
                        return Err(Failure::Unavailable("the watch stream skipped updates; reconnecting".into()));
                    }
                }
            }
            _ = tick.tick() => {
                if dirty {
                    let (agents, hosts) = fleet.lists();
                    let doc = crate::ps::document(&agents, &hosts, fleet_proto::clock::now_ms());
                    if !send(tx, "fleet", &doc).await {
                        return Ok(Watched::PageGone);
                    }
                    dirty = false;
                    summary_dirty = true;
                }
                if summary_dirty && tokio::time::Instant::now() >= summary_due {
                    summary_dirty = false;
                    summary_due = tokio::time::Instant::now() + SUMMARY_EVERY;
                    let asked = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.summarize(SummaryRequest { selector: selector.clone() }),
                    )
                    .await;
                    if let Ok(Ok(s)) = asked
                        && !send(tx, "summary", &crate::ps::summary_json(&s.into_inner())).await
                    {
                        return Ok(Watched::PageGone);
                    }
                }
            }
        }
    }
}

/// `/api/events`: the last hour's events then live ones (`event` events,
/// each with its sequence number as id, so a reconnect resumes after the
/// last one seen). The per-turn kinds are left out, as `fleetctl events`
/// does.
async fn events_stream(
    State(app): State<Arc<App>>,
    Selection(selector): Selection,
    headers: HeaderMap,
) -> Response {
    let after_seq = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut client = app.client.clone();
    stream_response(&app, move |tx| async move {
        let mut stream = client
            .events(EventsRequest {
                follow: true,
                after_seq,
                agent: String::new(),
                kinds: Vec::new(),
                selector,
                since_unix_ms: fleet_proto::clock::now_ms().saturating_sub(BACKLOG_MS),
                until_unix_ms: 0,
            })
            .await?
            .into_inner();
        while let Some(e) = stream.message().await? {
            if crate::events::QUIET_KINDS.contains(&e.kind.as_str()) {
                continue;
            }
            let Ok(data) = serde_json::to_string(&crate::events::event_json(&e)) else {
                continue;
            };
            let ev = SseEvent::default()
                .event("event")
                .id(e.seq.to_string())
                .data(data);
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
        Err(Failure::Unavailable(
            "the server closed the event stream".into(),
        ))
    })
}

/// `/api/screen?agent=ADDRESS`: an agent's screen, live, with colours, as
/// runs of text and colours (`frame` events); never HTML.
async fn screen_stream(
    State(app): State<Arc<App>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(agent) = q.get("agent").cloned() else {
        return failure_response(&Failure::Usage("agent= is required".into()));
    };
    if let Err(e) = fleet_proto::address::Address::parse(&agent) {
        return failure_response(&Failure::Usage(e.to_string()));
    }
    let mut client = app.client.clone();
    stream_response(&app, move |tx| async move {
        let mut stream = client
            .watch_screen(WatchScreenRequest {
                agent,
                max_fps: 5,
                colours: true,
                once: false,
            })
            .await?
            .into_inner();
        while let Some(f) = stream.message().await? {
            if !send(&tx, "frame", &frame_json(&f)).await {
                return Ok(());
            }
        }
        Err(Failure::Unavailable(
            "the server closed the screen stream".into(),
        ))
    })
}

fn frame_json(f: &ScreenFrame) -> serde_json::Value {
    let lines: Vec<Vec<ansi::Run>> = f
        .lines
        .iter()
        .take(MAX_SCREEN_LINES)
        .map(|l| ansi::runs(l))
        .collect();
    serde_json::json!({
        "schema": "fleet.dashboard.frame/v1",
        "tenant_id": f.tenant_id, "host": f.host, "agent": f.agent,
        "seq": f.seq, "ts_unix_ms": f.ts_unix_ms,
        "width": f.width, "height": f.height,
        "alternate_screen": f.alternate_screen, "dead": f.dead,
        "lines": lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::PaneState;

    #[test]
    fn selections_read_the_words_ps_takes() {
        let q = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(selector(&q(&[])).ok(), Some(None));
        let s = selector(&q(&[("pane", "dead,alive"), ("name", "a*")]))
            .ok()
            .flatten();
        let s = s.unwrap_or_default();
        assert_eq!(s.pane, [PaneState::Dead as i32, PaneState::Alive as i32]);
        assert_eq!(s.names, ["a*"]);
        assert!(selector(&q(&[("health", "sick")])).is_err());
        assert!(selector(&q(&[("name", "a[")])).is_err());
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..63]));
    }
}
