//! `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz` (ClickHouse is
//! migrated and writes succeed, the consumer owns its partitions and makes progress; the body
//! says what blocks it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use leadstream_runtime::health::{readyz, Readiness};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
}

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                let (code, body) = readyz(&s.readiness);
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    body,
                )
            }),
        )
        .with_state(AppState { metrics, readiness });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "http endpoint failed");
    }
}
