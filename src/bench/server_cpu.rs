//! `--server-metrics URL`: the server's own CPU time over a measured run,
//! read from the `process_cpu_seconds_total` counter of its Prometheus
//! endpoint before and after. CPU per call is the figure that does not
//! drift on a shared machine, where throughput and latency depend on what
//! else runs; it is reported beside them.

use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const COUNTER: &str = "process_cpu_seconds_total";
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the server's CPU seconds so far from its `/metrics` (plain HTTP).
pub async fn read(url: &str) -> anyhow::Result<f64> {
    let uri: axum::http::Uri = url
        .parse()
        .with_context(|| format!("--server-metrics {url}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let body = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let response = client.get(uri).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "answered {}",
            response.status()
        );
        Ok(response.into_body().collect().await?.to_bytes())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {SCRAPE_TIMEOUT:?}"))
    .and_then(|answer| answer)
    .with_context(|| format!("scraping {url}"))?;
    let text = String::from_utf8_lossy(&body);
    cpu_seconds(&text).with_context(|| format!("{url} exposes no {COUNTER}"))
}

/// The counter's value in a Prometheus text exposition.
fn cpu_seconds(text: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(COUNTER)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_counter_and_not_its_help_or_a_longer_name() {
        let text = "# HELP process_cpu_seconds_total Total CPU.\n\
                    # TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total_other 9\n\
                    process_cpu_seconds_total 12.5\n";
        assert_eq!(cpu_seconds(text), Some(12.5));
        assert_eq!(cpu_seconds("process_open_fds 3\n"), None);
    }
}
