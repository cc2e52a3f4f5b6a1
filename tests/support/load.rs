//! A mixed read/write load of many concurrent clients against one vecmem,
//! for the tests that kill a Qdrant peer or node underneath it: every call's
//! outcome is kept, and every acknowledged write is remembered so the test
//! can read each one back afterwards.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::Code;
use vecmem::proto::{self, ReadConsistency};

use super::TestServer;
use super::data::*;

/// Tenants the load spreads over.
const TENANTS: usize = 4;
/// Bound on any one call, so a hang shows as DEADLINE_EXCEEDED.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A write that was acknowledged: (tenant, id).
pub type Acknowledged = (String, String);

#[derive(Default)]
struct Shared {
    calls: AtomicUsize,
    acknowledged: Mutex<Vec<Acknowledged>>,
    failures: Mutex<Vec<(Code, String)>>,
    stop: AtomicBool,
}

/// A running load; [`Load::finish`] stops it and reports.
pub struct Load {
    shared: Arc<Shared>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

/// What the load saw.
pub struct Report {
    pub calls: usize,
    pub acknowledged: Vec<Acknowledged>,
    pub failures: Vec<(Code, String)>,
}

impl Load {
    /// Starts `clients` clients, each on its own connection: even ones
    /// upsert new memories (one per call), odd ones read back what was
    /// acknowledged (FRESH gets and searches). Each stops after
    /// `max_calls` calls or when [`Load::finish`] is called.
    pub async fn start(server: &TestServer, clients: usize, max_calls: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let mut handles = Vec::with_capacity(clients);
        for c in 0..clients {
            let client = server.memory().await;
            let shared = shared.clone();
            handles.push(tokio::spawn(run_client(c, client, shared, max_calls)));
        }
        Self {
            shared,
            clients: handles,
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.shared.acknowledged.lock().expect("lock").len()
    }

    /// Waits (up to `limit`) until `count` writes were acknowledged in all.
    pub async fn wait_for_acknowledged(&self, count: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.acknowledged() >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub async fn finish(self) -> Report {
        self.shared.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("load client");
        }
        Report {
            calls: self.shared.calls.load(Ordering::SeqCst),
            acknowledged: self.shared.acknowledged.lock().expect("lock").clone(),
            failures: self.shared.failures.lock().expect("lock").clone(),
        }
    }
}

async fn run_client(
    c: usize,
    mut client: proto::memory_service_client::MemoryServiceClient<tonic::transport::Channel>,
    shared: Arc<Shared>,
    max_calls: usize,
) {
    let writer = c.is_multiple_of(2);
    for n in 0..max_calls {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let tenant = format!("t{}", (c / 2 + n) % TENANTS);
        let outcome = if writer {
            let id = format!("c{c}-{n}");
            let vector = [1.0, (c + 1) as f32, (n + 1) as f32, 0.5];
            let mut request =
                tonic::Request::new(upsert(&tenant, vec![memory(&id, vector, json!({"n": n}))]));
            request.set_timeout(CALL_TIMEOUT);
            let result = client.upsert(request).await;
            if result.is_ok() {
                shared.acknowledged.lock().expect("lock").push((tenant, id));
            }
            result.map(drop)
        } else {
            let known = {
                let acknowledged = shared.acknowledged.lock().expect("lock");
                acknowledged
                    .get((c * 7919 + n * 104_729) % acknowledged.len().max(1))
                    .cloned()
            };
            match known {
                Some((tenant, id)) if n % 2 == 0 => {
                    let mut get = get(&tenant, &[&id]);
                    get.consistency = ReadConsistency::Fresh as i32;
                    let mut request = tonic::Request::new(get);
                    request.set_timeout(CALL_TIMEOUT);
                    match client.get(request).await {
                        Ok(found) if found.get_ref().memories.len() == 1 => Ok(()),
                        Ok(found) => Err(tonic::Status::data_loss(format!(
                            "acknowledged {tenant}/{id} read back as {:?}",
                            found.into_inner()
                        ))),
                        Err(status) => Err(status),
                    }
                }
                _ => {
                    let mut search = search(&tenant, [1.0, 1.0, 1.0, 0.5], 5);
                    search.consistency = ReadConsistency::Fresh as i32;
                    let mut request = tonic::Request::new(search);
                    request.set_timeout(CALL_TIMEOUT);
                    client.search(request).await.map(drop)
                }
            }
        };
        shared.calls.fetch_add(1, Ordering::SeqCst);
        if let Err(status) = outcome {
            shared
                .failures
                .lock()
                .expect("lock")
                .push((status.code(), status.message().to_owned()));
        }
    }
}

impl Report {
    /// Fewer than `percent`% of calls failed, and only with UNAVAILABLE.
    pub fn assert_few_failures_all_unavailable(&self, percent: f64) {
        let wrong: Vec<_> = self
            .failures
            .iter()
            .filter(|(code, _)| *code != Code::Unavailable)
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of {} calls failed with another code than UNAVAILABLE: {:?}",
            wrong.len(),
            self.calls,
            &wrong[..wrong.len().min(5)]
        );
        let share = self.failures.len() as f64 * 100.0 / self.calls.max(1) as f64;
        assert!(
            share < percent,
            "{} of {} calls failed ({share:.2}%): {:?}",
            self.failures.len(),
            self.calls,
            &self.failures[..self.failures.len().min(5)]
        );
    }

    /// Every acknowledged write reads back (FRESH) through `server`.
    pub async fn assert_every_acknowledged_write_readable(&self, server: &TestServer) {
        let mut client = server.memory().await;
        let mut by_tenant: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (tenant, id) in &self.acknowledged {
            by_tenant.entry(tenant).or_default().push(id);
        }
        let mut missing = Vec::new();
        for (tenant, ids) in by_tenant {
            for chunk in ids.chunks(200) {
                let mut request = get(tenant, chunk);
                request.consistency = ReadConsistency::Fresh as i32;
                let found = client.get(request).await.expect("read back").into_inner();
                missing.extend(
                    found
                        .missing_ids
                        .into_iter()
                        .map(|id| format!("{tenant}/{id}")),
                );
            }
        }
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged writes are gone: {:?}",
            missing.len(),
            self.acknowledged.len(),
            &missing[..missing.len().min(10)]
        );
    }
}
