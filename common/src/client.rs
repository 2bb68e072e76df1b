//! Calling another service over HTTP: timeouts on every call, one retry only when the
//! connection itself failed (so the request never reached the other side), and 503 with
//! `Retry-After` for the caller's client when the other service cannot answer — never a guess.

use std::time::Duration;

use crate::error::ApiError;

/// A client for one upstream service.
#[derive(Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    base: String,
    /// Shown to the end user when the upstream cannot answer.
    unavailable: &'static str,
    /// Sent with every request (e.g. the service credential for `/internal/**`).
    headers: reqwest::header::HeaderMap,
}

/// How long an idle connection to another service is kept for reuse.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

impl ServiceClient {
    pub fn new(base: &str, timeout: Duration, unavailable: &'static str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            // An idle connection is dropped before the other side may close it: the services
            // keep one 75 s, a gateway (the local stack's internal listener, a cluster's
            // proxies) 30 s or less. Reusing one the server is closing at that moment fails
            // the request (seen in the chaos rehearsal: a join answered 503 after the line
            // had been quiet for half a minute). reqwest keeps them 90 s by default.
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .build()
            .expect("static HTTP client configuration is valid");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            unavailable,
            headers: reqwest::header::HeaderMap::new(),
        }
    }

    /// Sends `X-Internal-Token: <token>` with every request: the credential another
    /// service's `/internal/**` requires. The header is marked sensitive (never logged).
    /// `INTERNAL_API_TOKEN` is validated as visible ASCII, so it always makes a header value;
    /// if one did not, no credential is sent and the other side refuses (fail closed).
    pub fn with_internal_token(mut self, token: &crate::config::Secret<String>) -> Self {
        match reqwest::header::HeaderValue::from_str(token.expose()) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.headers.insert(
                    reqwest::header::HeaderName::from_static("x-internal-token"),
                    value,
                );
            }
            Err(_) => tracing::error!("INTERNAL_API_TOKEN is not a valid header value"),
        }
        self
    }

    /// The headers of every request: the credential, and the caller's trace context.
    fn headers(&self) -> reqwest::header::HeaderMap {
        let mut headers = self.headers.clone();
        for (name, value) in crate::telemetry::context_of(&tracing::Span::current()) {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
                headers.insert(reqwest::header::HeaderName::from_static(name), value);
            }
        }
        headers
    }

    fn unavailable(&self, url: &str, why: &str) -> ApiError {
        tracing::warn!(%url, %why, "upstream could not answer");
        crate::error::Code::DependencyUnavailable
            .err(self.unavailable)
            .with_retry_after(2)
    }

    /// GETs `path` and decodes a 200 as `T`; `None` for a 404; 503 for anything else.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        let res = loop {
            attempt += 1;
            match self.http.get(&url).headers(self.headers()).send().await {
                Ok(res) => break res,
                Err(e) if e.is_connect() && attempt < 2 => continue,
                Err(e) => return Err(self.unavailable(&url, &e.to_string())),
            }
        };
        match res.status() {
            reqwest::StatusCode::OK => res
                .json()
                .await
                .map(Some)
                .map_err(|e| self.unavailable(&url, &e.to_string())),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            other => Err(self.unavailable(&url, &format!("status {other}"))),
        }
    }

    /// POSTs `body` as JSON to `path` and decodes a 200 as `T`; 503 for anything else. Only
    /// for requests that are safe to repeat (the caller retries a failed one later), since a
    /// timeout cannot tell whether the other side acted.
    pub async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        let res = loop {
            attempt += 1;
            match self
                .http
                .post(&url)
                .headers(self.headers())
                .json(body)
                .send()
                .await
            {
                Ok(res) => break res,
                Err(e) if e.is_connect() && attempt < 2 => continue,
                Err(e) => return Err(self.unavailable(&url, &e.to_string())),
            }
        };
        match res.status() {
            reqwest::StatusCode::OK => res
                .json()
                .await
                .map_err(|e| self.unavailable(&url, &e.to_string())),
            other => Err(self.unavailable(&url, &format!("status {other}"))),
        }
    }
}
