//! The HTTP endpoint (`--http ADDR`, `[http] listen`): a plain HTTP/1
//! server on the runtime that runs the flows, reading only the board.
//!
//! - `GET /health`: 200 while the run's loop runs.
//! - `GET /ready`: 200 once every flow reached both clusters and loaded its
//!   metadata and checkpoints, with no partition stopped; 503 with the
//!   reasons, one a line, otherwise.
//! - `GET /status`: the board as JSON.
//! - `GET /metrics`: the Prometheus text exposition.
//! - `POST /flows/NAME/pause` and `/resume`, only with `[http] control = true`.
//!
//! It has no authentication, and says nothing a configuration keeps secret
//! (the board holds none): bind it to a trusted address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;

use super::board::{Board, FlowView};
use super::metrics::{self, Metrics, MetricsOptions};
use crate::config::HttpConfig;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// Pause before accepting again after a failed accept (out of file
/// descriptors, say), so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a client may take to send a request's headers: one that
/// connects and says nothing would otherwise hold its connection forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `config.listen` and serves the board there until the process
/// ends; returns the address bound (the port, when 0 was asked).
pub async fn start(
    address: &str,
    config: &HttpConfig,
    board: Board,
) -> Result<SocketAddr, HttpError> {
    let listen_error = |source| HttpError::Listen {
        address: address.to_owned(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    let options = MetricsOptions {
        partition_metrics: config.partition_metrics,
    };
    let endpoint = Arc::new(Endpoint {
        metrics: Metrics::new(board.clone(), options),
        board,
        control: config.control,
    });
    tracing::info!(address = %bound, control = config.control, "HTTP endpoint listening");
    tokio::spawn(serve(listener, endpoint));
    Ok(bound)
}

async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP endpoint: cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = endpoint.respond(request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP endpoint: connection ended with an error");
            }
        });
    }
}

/// What the routes read.
#[derive(Debug)]
struct Endpoint {
    board: Board,
    metrics: Metrics,
    control: bool,
}

/// `/status`'s document.
#[derive(Debug, Serialize)]
struct Status<'a> {
    ready: bool,
    reasons: Vec<String>,
    flows: Vec<&'a FlowView>,
}

impl Endpoint {
    fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let get = method == Method::GET;
        match path {
            "/health" if get => {
                if self.board.is_running() {
                    text(StatusCode::OK, "ok\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the run has ended\n".into(),
                    )
                }
            }
            "/ready" if get => {
                let reasons = self.board.not_ready();
                if reasons.is_empty() {
                    text(StatusCode::OK, "ready\n".into())
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, lines(&reasons))
                }
            }
            "/status" if get => self.status(),
            "/metrics" if get => match self.metrics.render() {
                Ok(body) => response(StatusCode::OK, metrics::CONTENT_TYPE, body),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot render the metrics\n".into(),
                ),
            },
            "/health" | "/ready" | "/status" | "/metrics" => text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes GET\n"),
            ),
            _ => match control_route(path) {
                Some((flow, pause)) if method == Method::POST => self.control(flow, pause),
                Some(_) => text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} takes POST\n"),
                ),
                None => text(StatusCode::NOT_FOUND, format!("no such page: {path}\n")),
            },
        }
    }

    fn status(&self) -> Response<Full<Bytes>> {
        let flows = self.board.flows();
        let reasons = self.board.not_ready();
        let status = Status {
            ready: reasons.is_empty(),
            reasons,
            flows: flows.iter().map(AsRef::as_ref).collect(),
        };
        match serde_json::to_string_pretty(&status) {
            Ok(json) => response(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the status: {e}\n"),
            ),
        }
    }

    fn control(&self, flow: &str, pause: bool) -> Response<Full<Bytes>> {
        if !self.control {
            return text(
                StatusCode::FORBIDDEN,
                "pausing and resuming flows is off: set [http] control = true\n".into(),
            );
        }
        match self.board.set_paused(flow, pause) {
            Ok(()) => {
                let done = if pause { "paused" } else { "resumed" };
                tracing::info!(flow, "flow {done} over the HTTP endpoint");
                text(StatusCode::OK, format!("flow `{flow}` {done}\n"))
            }
            Err(e) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
        }
    }
}

/// `/flows/NAME/pause` or `/resume`: the flow's name and whether to pause.
fn control_route(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/flows/")?;
    let (flow, action) = rest.rsplit_once('/')?;
    let pause = match action {
        "pause" => true,
        "resume" => false,
        _ => return None,
    };
    (!flow.is_empty() && !flow.contains('/')).then_some((flow, pause))
}

fn lines(reasons: &[String]) -> String {
    reasons.iter().map(|reason| format!("{reason}\n")).collect()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::board::{FlowPhase, PartitionState, PartitionView};
    use http_body_util::BodyExt;

    fn endpoint(control: bool) -> Endpoint {
        let board = Board::new();
        Endpoint {
            metrics: Metrics::new(board.clone(), MetricsOptions::default()),
            board,
            control,
        }
    }

    async fn call(endpoint: &Endpoint, method: Method, path: &str) -> (StatusCode, String) {
        let response = endpoint.respond(&method, path);
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// A client that connects and sends nothing is dropped once the header
    /// read timeout passes (the clock is paused, so the test does not wait).
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_the_header_read_timeout() {
        use tokio::io::AsyncReadExt;
        let config = HttpConfig {
            listen: None,
            control: false,
            partition_metrics: true,
        };
        let bound = start("127.0.0.1:0", &config, Board::new()).await.unwrap();
        let mut client = tokio::net::TcpStream::connect(bound).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut buffer = [0u8; 256];
        let read = client.read(&mut buffer).await;
        let waited = started.elapsed();
        assert!(
            matches!(read, Ok(0) | Err(_)) || buffer.starts_with(b"HTTP/1.1 408"),
            "{read:?}"
        );
        assert!(
            waited >= HEADER_READ_TIMEOUT && waited < HEADER_READ_TIMEOUT * 2,
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn ready_says_why_not_until_every_flow_runs_with_no_partition_stopped() {
        let endpoint = endpoint(false);
        let (status, body) = call(&endpoint, Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "no flow has started yet\n");

        let handle = endpoint.board.register("dr");
        let (status, body) = call(&endpoint, Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("flow `dr`: starting"), "{body}");

        let mut view = FlowView::starting("dr");
        view.phase = FlowPhase::Running;
        view.connected.source = true;
        view.connected.target = true;
        view.partitions = vec![PartitionView {
            topic: "orders".into(),
            partition: 0,
            state: PartitionState::Stopped {
                error: "records 5..9 deleted before they were copied".into(),
            },
            next_offset: 5,
            end_offset: Some(12),
            lag_records: Some(7),
            lag_seconds: None,
            owner: None,
        }];
        view.ready_reasons = FlowView::readiness(view.phase, view.connected, &view.partitions);
        handle.publish(view.clone());
        let (status, body) = call(&endpoint, Method::GET, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "flow `dr`: partition orders-0 stopped: records 5..9 deleted before they were copied\n"
        );
        let (status, body) = call(&endpoint, Method::GET, "/status").await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["ready"], false);
        assert_eq!(
            json["flows"][0]["partitions"][0]["state"]["kind"],
            "stopped"
        );

        view.partitions.clear();
        view.ready_reasons.clear();
        handle.publish(view);
        assert_eq!(
            call(&endpoint, Method::GET, "/ready").await,
            (StatusCode::OK, "ready\n".into())
        );
        assert_eq!(
            call(&endpoint, Method::GET, "/health").await.0,
            StatusCode::OK
        );
        endpoint.board.finish();
        assert_eq!(
            call(&endpoint, Method::GET, "/health").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn pause_and_resume_only_with_control_on() {
        let off = endpoint(false);
        off.board.register("dr");
        let (status, body) = call(&off, Method::POST, "/flows/dr/pause").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("[http] control = true"), "{body}");

        let on = endpoint(true);
        let handle = on.board.register("dr");
        assert_eq!(
            call(&on, Method::POST, "/flows/dr/pause").await,
            (StatusCode::OK, "flow `dr` paused\n".into())
        );
        assert!(handle.paused());
        assert_eq!(
            call(&on, Method::POST, "/flows/dr/resume").await.0,
            StatusCode::OK
        );
        assert!(!handle.paused());
        assert_eq!(
            call(&on, Method::POST, "/flows/other/pause").await,
            (StatusCode::NOT_FOUND, "no flow named `other`\n".into())
        );
        assert_eq!(
            call(&on, Method::GET, "/flows/dr/pause").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            call(&on, Method::GET, "/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&on, Method::POST, "/metrics").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn metrics_come_with_the_openmetrics_content_type() {
        let endpoint = endpoint(false);
        let response = endpoint.respond(&Method::GET, "/metrics");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], metrics::CONTENT_TYPE);
    }

    #[tokio::test]
    async fn an_address_in_use_is_named_in_the_error() {
        let board = Board::new();
        let config = HttpConfig::default();
        let bound = start("127.0.0.1:0", &config, board.clone()).await.unwrap();
        let again = start(&bound.to_string(), &config, board).await.unwrap_err();
        let message = again.to_string();
        assert!(
            message.starts_with(&format!("cannot listen on {bound}: ")),
            "{message}"
        );
    }
}
