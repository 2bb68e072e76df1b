//! A stand-in for concert-api's public catalogue.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;

/// A stand-in for concert-api's public `GET /api/concerts/{id}`: 200 for the given ids,
/// 404 for others. A real HTTP server, so callers exercise their real client.
pub struct StubCatalogue {
    pub url: String,
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    handle: actix_web::dev::ServerHandle,
}

impl StubCatalogue {
    pub async fn start(existing: Vec<i64>) -> Self {
        use actix_web::{App, HttpResponse, HttpServer, web};
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (ids, count) = (Arc::new(existing), requests.clone());
        let server = HttpServer::new(move || {
            let (ids, count) = (ids.clone(), count.clone());
            App::new().route(
                "/api/concerts/{id}",
                web::get().to(move |id: web::Path<i64>| {
                    let (ids, count) = (ids.clone(), count.clone());
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        let id = id.into_inner();
                        if ids.contains(&id) {
                            HttpResponse::Ok()
                                .json(serde_json::json!({"id": id, "title": "t", "performer": "p"}))
                        } else {
                            HttpResponse::NotFound().finish()
                        }
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind stub catalogue");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            handle,
        }
    }

    /// An address where nothing listens: a catalogue that is down.
    pub fn unreachable_url() -> String {
        format!("http://127.0.0.1:{}", free_port())
    }
}

impl Drop for StubCatalogue {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}
