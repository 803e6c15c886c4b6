//! What keeps the API from hurting ClickHouse or the service: at most
//! `api.max_concurrent_requests` requests at once (a 503 beyond, so a burst of dashboards cannot
//! pile queries up on ClickHouse) and `api.request_timeout` each (a 503 after it).

use crate::api::{Api, ApiError};
use crate::internal_events as events;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The middleware of every API and wallboard route.
pub async fn guard(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Ok(_permit) = api.permits.clone().try_acquire_owned() else {
        events::api_busy();
        return ApiError::unavailable("too many requests at once; try again").into_response();
    };
    match tokio::time::timeout(api.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable("the request took longer than api.request_timeout")
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Health;
    use crate::Funnels;
    use axum::routing::get;
    use axum::Router;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, Semaphore};

    fn api(permits: usize, timeout: Duration) -> Api {
        let funnels = Funnels::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/funnel.yaml"
        )))
        .expect("funnels");
        Api {
            client: clickhouse::Client::default().with_url("http://127.0.0.1:1"),
            funnels: Arc::new(funnels),
            metrics: leadstream_runtime::telemetry::metrics_handle(),
            health: Arc::new(Health::default()),
            min_sample: 100,
            request_timeout: timeout,
            permits: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Serves `/slow` (waits for `release`, or `hold` at most) behind the guard.
    async fn serve(api: Api, release: Arc<Notify>, hold: Duration) -> String {
        let app = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    tokio::select! {
                        _ = release.notified() => {}
                        _ = tokio::time::sleep(hold) => {}
                    }
                    "done"
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(api.clone(), guard))
            .with_state(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn get_status(addr: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /slow HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let code = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, buf)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_the_limit_are_turned_away_at_once() {
        let release = Arc::new(Notify::new());
        let a = api(1, Duration::from_secs(30));
        let permits = a.permits.clone();
        let addr = serve(a, release.clone(), Duration::from_secs(30)).await;
        let first = tokio::spawn({
            let addr = addr.clone();
            async move { get_status(&addr).await }
        });
        // The first request holds the only permit until released.
        while permits.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (code, body) = get_status(&addr).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("too many requests"), "{body}");
        release.notify_one();
        assert_eq!(first.await.expect("first").0, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_takes_too_long_gets_a_503() {
        let addr = serve(
            api(4, Duration::from_millis(50)),
            Arc::new(Notify::new()),
            Duration::from_secs(30),
        )
        .await;
        let (code, body) = get_status(&addr).await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("api.request_timeout"), "{body}");
    }
}
