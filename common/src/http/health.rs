//! The endpoints every service serves besides its own: health, metrics, OpenAPI, and the
//! fallback that answers 404 or 405 as problem+json.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::{ApiError, problem_for_status};
use crate::metrics::Metrics;
use crate::redis::RedisStore;

use super::OpenApiJson;
use super::allow::{RouteMethods, UnlistedRoutes};

/// What `/health/ready` checks. A dependency a service does not use is `None`.
///
/// Readiness answers whether this process can serve requests: its databases and Redis. The
/// broker is reported in the body (`"broker"` under `"not_required"`) but never makes the
/// answer 503: the outbox absorbs a broker outage, and one Kafka problem must not take every
/// replica of every API out of rotation (DESIGN §6). Its state is the `kafka_broker_up`
/// metric, with an alert.
#[derive(Clone, Default)]
pub struct Readiness {
    pub db: Option<sea_orm::DatabaseConnection>,
    /// Other services' databases a process works on (batch), by name.
    pub other_databases: Vec<(&'static str, sea_orm::DatabaseConnection)>,
    pub redis: Option<RedisStore>,
    /// Where the broker watcher ([`crate::startup::watch_broker`]) keeps the broker's state.
    pub broker: Option<Arc<Metrics>>,
}

impl Readiness {
    /// Each dependency's state: `"ok"` or `"down: <reason>"`.
    pub async fn check(&self) -> Vec<(&'static str, Result<(), String>)> {
        const LIMIT: Duration = Duration::from_secs(2);
        let timed =
            |name: &'static str, fut: Pin<Box<dyn Future<Output = Result<(), String>> + Send>>| async move {
                let r = tokio::time::timeout(LIMIT, fut)
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                (name, r)
            };
        let mut checks = Vec::new();
        if let Some(db) = self.db.clone() {
            checks.push(timed(
                "database",
                Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) }),
            ));
        }
        for (name, db) in self.other_databases.clone() {
            checks.push(timed(
                name,
                Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) }),
            ));
        }
        if let Some(redis) = self.redis.clone() {
            checks.push(timed(
                "redis",
                Box::pin(async move { redis.ping().await.map_err(|e| e.to_string()) }),
            ));
        }
        futures_util::future::join_all(checks).await
    }

    /// The broker's state as last watched (no round trip: a probe must answer fast even
    /// while the broker hangs), reported beside the checks but not required.
    pub fn broker(&self) -> Option<Result<(), String>> {
        let metrics = self.broker.as_ref()?;
        Some(if metrics.broker_up() {
            Ok(())
        } else {
            Err("unreachable (see kafka_broker_up)".into())
        })
    }
}

fn state_of(r: &Result<(), String>) -> serde_json::Value {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("down: {e}").into(),
    }
}

pub(super) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub(super) async fn ready(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    let results = readiness.check().await;
    let broker = readiness.broker();
    let mut checks = serde_json::Map::new();
    let mut down = Vec::new();
    for (name, r) in &results {
        if r.is_err() {
            down.push(*name);
        }
        checks.insert((*name).to_owned(), state_of(r));
    }
    let mut not_required = serde_json::Map::new();
    if let Some(b) = &broker {
        not_required.insert("broker".into(), state_of(b));
    }
    if down.is_empty() {
        return Ok(HttpResponse::Ok().json(
            serde_json::json!({"status": "ok", "checks": checks, "not_required": not_required}),
        ));
    }
    Err(crate::error::Code::NotReady
        .err(format!("unavailable: {}", down.join(", ")))
        .with_retry_after(1)
        .with_extension("checks", checks.into())
        .with_extension("not_required", not_required.into()))
}

pub(super) async fn metrics_text(metrics: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

pub(super) async fn openapi(doc: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// Nothing matched: 405 with `Allow` if the path exists for another method, else 404.
pub(super) async fn no_route(req: HttpRequest) -> HttpResponse {
    let path = req.path();
    let mut allowed = req
        .app_data::<web::Data<RouteMethods>>()
        .map(|t| t.allowed(path))
        .unwrap_or_default();
    if let Some(unlisted) = req.app_data::<web::Data<UnlistedRoutes>>() {
        allowed.extend(unlisted.table().allowed(path));
    }
    let status = if !allowed.is_empty() || req.resource_map().has_resource(path) {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    };
    let mut res = problem_for_status(status, req.method().as_str(), path).to_response();
    if status == StatusCode::METHOD_NOT_ALLOWED && !allowed.is_empty() {
        let list = allowed
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = header::HeaderValue::from_str(&list) {
            res.headers_mut().insert(header::ALLOW, v);
        }
    }
    res
}
