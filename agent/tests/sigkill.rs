//! SIGKILL of the agent in the middle of 500 concurrent ADD/DEL runs of the
//! real plugin: no acknowledged allocation is lost and no IP is handed out
//! twice, checked by reloading the state file and by re-running the ops.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use eni_ipam_agent::allocator::AllocationKey;
use eni_ipam_agent::state::StateStore;
use serde_json::json;

const CONTAINERS: usize = 500;
const THREADS: usize = CONTAINERS; // every ADD of the first wave in flight at once
const KILL_AFTER_OPS: usize = 300;

#[derive(Default)]
struct Outcomes {
    added: BTreeMap<usize, String>,
    add_failed: BTreeSet<usize>,
    deleted: BTreeSet<usize>,
    del_failed: BTreeSet<usize>,
}

/// Even containers are deleted right after their ADD; odd ones keep their IP.
fn churn(config: &serde_json::Value, indexes: Vec<usize>, on_op: impl Fn() + Sync) -> Outcomes {
    let outcomes = Mutex::new(Outcomes::default());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = indexes.get(n) else { return };
                    let container = format!("kill{i}");
                    let add = run_plugin("ADD", &container, "/proc/self/ns/net", "eth0", config, None, "");
                    on_op();
                    if !add.ok {
                        assert_eq!(
                            add.stdout.as_ref().map(|e| e["code"].clone()),
                            Some(json!(11)),
                            "{}",
                            add.raw
                        );
                        outcomes.lock().unwrap().add_failed.insert(i);
                        continue;
                    }
                    outcomes.lock().unwrap().added.insert(i, address_of(add.stdout.as_ref().unwrap()));
                    if i % 2 == 0 {
                        let del = run_plugin("DEL", &container, "", "eth0", config, None, "");
                        on_op();
                        let mut o = outcomes.lock().unwrap();
                        if del.ok {
                            o.deleted.insert(i)
                        } else {
                            o.del_failed.insert(i)
                        };
                    }
                }
            });
        }
    });
    outcomes.into_inner().unwrap()
}

#[test]
fn sigkill_during_500_concurrent_add_del_loses_nothing_and_hands_no_ip_twice() {
    let dir = tempfile::tempdir().unwrap();
    // More IPs than containers: with least-recently-released reuse, no IP is ever handed out twice here.
    let mut agent = Agent::start(dir.path(), &pool_json([10, 80, 0, 0], 600, "10.80.0.0/22", "10.80.0.1"));
    let config = json!({
        "cniVersion": "1.0.0", "name": "n", "type": "bridge",
        "ipam": {"type": "eni-ipam-cni", "socket": agent.socket, "timeoutSeconds": 10},
    });
    let done = AtomicUsize::new(0);
    let pid = agent.pid();
    let first = churn(&config, (0..CONTAINERS).collect(), || {
        if done.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER_OPS {
            let status =
                std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
            assert!(status.success());
        }
    });
    assert!(
        first.added.len() >= KILL_AFTER_OPS / 2,
        "the kill came mid-run: {} ADDs answered",
        first.added.len()
    );
    assert!(!first.add_failed.is_empty(), "some ADDs met the dead agent");

    // 1. The state file, reloaded as the agent would: valid, every acknowledged ADD present, every
    //    acknowledged DEL absent.
    let state = StateStore::new(&agent.state).load().expect("state file is valid after SIGKILL");
    for (i, ip) in &first.added {
        let key = AllocationKey::new(format!("kill{i}"), "eth0");
        if first.deleted.contains(i) {
            assert!(!state.allocations.contains_key(&key), "acknowledged DEL of kill{i} was lost");
        } else if !first.del_failed.contains(i) {
            assert_eq!(
                state.allocations.get(&key).map(|a| a.ip.as_str()),
                Some(ip.as_str()),
                "ADD of kill{i} lost"
            );
        }
    }
    let all_answers: Vec<&String> = first.added.values().collect();
    let distinct: BTreeSet<&String> = all_answers.iter().copied().collect();
    assert_eq!(distinct.len(), all_answers.len(), "an IP was handed out twice");

    // 2. Restart and redo what failed; held containers get their IPs again.
    agent.kill();
    agent.restart();
    let redo: Vec<usize> = (0..CONTAINERS).filter(|i| !first.deleted.contains(i)).collect();
    let second = churn(&config, redo, || {});
    assert!(
        second.add_failed.is_empty() && second.del_failed.is_empty(),
        "the restarted agent serves everything"
    );
    for (i, ip) in &second.added {
        // A DEL cut by the kill may or may not have been persisted; every other ADD must repeat.
        if let Some(before) = first.added.get(i).filter(|_| !first.del_failed.contains(i)) {
            assert_eq!(ip, before, "kill{i} got a different IP after the restart");
        }
    }
    let state = StateStore::new(&agent.state).load().unwrap();
    let held: BTreeSet<String> = state.allocations.keys().map(|k| k.container_id.clone()).collect();
    let want: BTreeSet<String> = (0..CONTAINERS).filter(|i| i % 2 == 1).map(|i| format!("kill{i}")).collect();
    assert_eq!(held, want, "exactly the odd containers hold IPs");
    let ips: BTreeSet<&String> = state.allocations.values().map(|a| &a.ip).collect();
    assert_eq!(ips.len(), want.len(), "no IP held twice");
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], want.len());
}
