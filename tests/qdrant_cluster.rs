//! vecmem in front of a real 3-node Qdrant cluster on loopback, one node
//! killed (SIGKILL) while 16 clients read and write: fewer than 1% of calls
//! may fail, only with UNAVAILABLE, and every acknowledged write must read
//! back afterwards. Once with the node vecmem dialled first, once with
//! another. The cluster topology is the one the README and Compose ship:
//! 6 shards, 3 replicas, write consistency 2, read consistency 1, medium
//! write ordering.
//!
//! Runs when `QDRANT_BIN` names a Qdrant server binary at build time;
//! otherwise each case is ignored with the reason. `tests/failover.rs`
//! covers the same ground against the double in CI.

mod support;

#[cfg(not(qdrant_bin))]
#[test]
#[ignore = "set QDRANT_BIN to a Qdrant server binary to run these cases against a real 3-node cluster"]
fn qdrant_cluster() {}

#[cfg(qdrant_bin)]
mod qdrant_cluster {
    use std::time::Duration;

    use super::support::load::Load;
    use super::support::qdrant_real::{QdrantCluster, binary};
    use super::support::start_in_front_of_qdrant;

    const CLIENTS: usize = 16;
    const CALLS_PER_CLIENT: usize = 4000;
    /// Writes acknowledged before the kill, and again after it.
    const WRITES_EACH_SIDE: usize = 300;

    /// vecmem's settings for the shipped cluster topology.
    const TOPOLOGY: [(&str, &str); 5] = [
        ("VECMEM__NAMESPACES__TEST__SHARD_NUMBER", "6"),
        ("VECMEM__NAMESPACES__TEST__REPLICATION_FACTOR", "3"),
        ("VECMEM__NAMESPACES__TEST__WRITE_CONSISTENCY_FACTOR", "2"),
        ("VECMEM__BACKEND__QDRANT__READ_CONSISTENCY", "1"),
        ("VECMEM__BACKEND__QDRANT__WRITE_ORDERING", "medium"),
    ];

    async fn kill_one_of_three_under_load(victim: usize) {
        let binary = binary().expect("QDRANT_BIN was set at build time");
        let mut cluster = QdrantCluster::start(&binary, 3).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let server = start_in_front_of_qdrant(&cluster.urls(), dir.path(), &TOPOLOGY);

        let load = Load::start(&server, CLIENTS, CALLS_PER_CLIENT).await;
        assert!(
            load.wait_for_acknowledged(WRITES_EACH_SIDE, Duration::from_secs(120))
                .await,
            "writes were not acknowledged before the kill"
        );
        cluster.nodes[victim].kill();
        let killed_at = load.acknowledged();
        assert!(
            load.wait_for_acknowledged(killed_at + WRITES_EACH_SIDE, Duration::from_secs(120))
                .await,
            "writes stalled with node {victim} dead"
        );
        let report = load.finish().await;
        eprintln!(
            "node {victim} killed: {} calls, {} failed ({:?}), {} writes acknowledged \
             ({killed_at} before the kill)",
            report.calls,
            report.failures.len(),
            report.failures.iter().take(3).collect::<Vec<_>>(),
            report.acknowledged.len(),
        );
        report.assert_few_failures_all_unavailable(1.0);
        report
            .assert_every_acknowledged_write_readable(&server)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_the_node_vecmem_dialled_first_loses_nothing_acknowledged() {
        kill_one_of_three_under_load(0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_another_node_loses_nothing_acknowledged() {
        kill_one_of_three_under_load(2).await;
    }
}
