//! The operator's HTTP endpoints: `/metrics` on `--metrics-addr`, `/healthz` and
//! `/readyz` on `--health-addr` (all three on one listener when both are the same).
//!
//! `/readyz` answers 200 for a leader and for a replica standing by (a rollout must not
//! wait for a standby to lead), 503 while starting or stopping; the body says which.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::leader::{Role, RoleCell};
use crate::metrics::Metrics;

/// Parses a listen address: `HOST:PORT`, or `:PORT` for every interface.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.parse()
        .map_err(|_| format!("expected HOST:PORT or :PORT, got {text:?}"))
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub role: Arc<RoleCell>,
}

/// Binds the listeners and serves them in the background; returns the bound addresses
/// (metrics, health), which differ from the requested ones for port 0.
pub async fn serve(
    endpoints: Endpoints,
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let metrics = Router::new().route("/metrics", get(metrics));
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if metrics_addr == health_addr {
        let bound = spawn(metrics.merge(health).with_state(endpoints), metrics_addr).await?;
        return Ok((bound, bound));
    }
    let metrics = spawn(metrics.with_state(endpoints.clone()), metrics_addr).await?;
    let health = spawn(health.with_state(endpoints), health_addr).await?;
    Ok((metrics, health))
}

async fn spawn(router: Router, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, %bound, "HTTP endpoint failed");
        }
    });
    Ok(bound)
}

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoints.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    match endpoints.role.get() {
        Role::Leading => (StatusCode::OK, "leader\n".to_owned()),
        Role::Standby(Some(holder)) => (StatusCode::OK, format!("standby: leader is {holder}\n")),
        Role::Standby(None) => (StatusCode::OK, "standby\n".to_owned()),
        Role::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned()),
        Role::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_the_go_form_too() {
        assert_eq!(
            parse_listen_addr(":8080"),
            Ok("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:0"),
            Ok("127.0.0.1:0".parse().unwrap())
        );
        assert!(parse_listen_addr("8080").is_err());
        assert!(parse_listen_addr("localhost:x").is_err());
    }
}
