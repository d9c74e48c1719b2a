//! The retry policy and `send_with_retry`: 429, 5xx and transport failures,
//! each attempt built afresh (a proof must never be sent twice).

use std::time::Duration;

use reqwest::{Response, StatusCode};
use url::Url;

use super::{display_url, header};
use crate::error::{Error, Result};

/// How failed calls are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt, for 429, 5xx and connection failures.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry (with jitter).
    pub base_delay: Duration,
    /// Longest wait, also the cap on a server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        if let Some(secs) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            return Duration::from_secs(secs).min(self.max_delay);
        }
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
        let jitter = rand::random::<f64>() * 0.25 + 0.875;
        exp.mul_f64(jitter).min(self.max_delay)
    }
}

/// Whether an answer is worth another attempt: 429 and 503 say the request
/// was not processed; other 5xx only for requests that are safe to repeat.
fn retryable(status: StatusCode, idempotent: bool) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
        || (idempotent && status.is_server_error())
}

/// Sends what `build` makes, building it afresh for every attempt (a proof
/// must never be sent twice), and retries per `policy`: 429 and 503 always,
/// other 5xx and timeouts only when `idempotent`, connection failures always
/// (nothing was sent). Honours `Retry-After`. Returns the last response.
pub(crate) async fn send_with_retry<F, Fut>(
    policy: &RetryPolicy,
    url: &Url,
    idempotent: bool,
    mut build: F,
) -> Result<Response>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::RequestBuilder>>,
{
    let mut attempt = 0;
    loop {
        match build().await?.send().await {
            Ok(resp) if retryable(resp.status(), idempotent) && attempt < policy.max_retries => {
                let wait = policy.delay(attempt, header(&resp, "Retry-After").as_deref());
                tracing::debug!(status = resp.status().as_u16(), ?wait, url = %display_url(url), "retrying");
                tokio::time::sleep(wait).await;
            }
            Ok(resp) => return Ok(resp),
            Err(e)
                if (e.is_connect() || (idempotent && e.is_timeout()))
                    && attempt < policy.max_retries =>
            {
                let wait = policy.delay(attempt, None);
                tracing::debug!(error = %transport_message(&e), ?wait, url = %display_url(url), "retrying after a transport error");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(Error::http(display_url(url), transport_message(&e))),
        }
        attempt += 1;
    }
}

/// A transport error without the URL's query (which may hold secrets).
fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}
