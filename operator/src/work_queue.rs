//! The queue of nodes to work on: the node short of the most IPs first; a
//! node is never worked by two workers at once (a push while it is in flight
//! is kept and served after), and pushes of a queued node coalesce.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    heap: BinaryHeap<(u32, Reverse<u64>, String)>,
    queued: HashMap<String, u32>,
    in_flight: HashSet<String>,
    again: HashMap<String, u32>,
    serial: u64,
    closed: bool,
}

/// Deficit-ordered, per-node exclusive work queue.
#[derive(Default)]
pub struct WorkQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Inner {
    fn enqueue(&mut self, node: String, deficit: u32) {
        self.serial += 1;
        self.queued.insert(node.clone(), deficit);
        self.heap.push((deficit, Reverse(self.serial), node));
    }
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for `node` to be worked; `deficit` orders it.
    pub fn push(&self, node: &str, deficit: u32) {
        let mut inner = self.inner.lock().expect("queue lock");
        if inner.in_flight.contains(node) {
            let d = inner.again.entry(node.to_owned()).or_default();
            *d = (*d).max(deficit);
            return;
        }
        match inner.queued.get(node) {
            // Queued already with at least this priority.
            Some(&d) if d >= deficit => return,
            _ => inner.enqueue(node.to_owned(), deficit),
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// The next node to work on; `None` once closed and drained.
    pub async fn pop(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.inner.lock().expect("queue lock");
                while let Some((deficit, _, node)) = inner.heap.pop() {
                    // Skip entries superseded by a later push with another priority.
                    if inner.queued.get(&node) == Some(&deficit) {
                        inner.queued.remove(&node);
                        inner.in_flight.insert(node.clone());
                        return Some(node);
                    }
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `node` done; a push that came meanwhile queues it again.
    pub fn done(&self, node: &str) {
        let mut inner = self.inner.lock().expect("queue lock");
        inner.in_flight.remove(node);
        if let Some(deficit) = inner.again.remove(node) {
            inner.enqueue(node.to_owned(), deficit);
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// Nodes queued or in flight.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().expect("queue lock");
        inner.queued.len() + inner.in_flight.len()
    }

    /// Whether nothing is queued or in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every worker and lets `pop` return `None` once the queue is empty.
    pub fn close(&self) {
        self.inner.lock().expect("queue lock").closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_largest_deficit_goes_first_then_first_come() {
        let q = WorkQueue::new();
        q.push("a", 2);
        q.push("b", 9);
        q.push("c", 2);
        q.push("d", 5);
        let mut order = Vec::new();
        for _ in 0..4 {
            let n = q.pop().await.unwrap();
            q.done(&n);
            order.push(n);
        }
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[tokio::test]
    async fn a_node_in_flight_is_not_handed_out_twice() {
        let q = WorkQueue::new();
        q.push("a", 1);
        let first = q.pop().await.unwrap();
        q.push("a", 3); // e.g. a pod took an IP meanwhile
        q.push("b", 1);
        assert_eq!(q.pop().await.unwrap(), "b", "a is in flight");
        q.done("b");
        q.done(&first);
        assert_eq!(q.pop().await.unwrap(), "a", "the push during flight is served after");
    }

    #[tokio::test]
    async fn pushes_coalesce_and_raise_priority() {
        let q = WorkQueue::new();
        q.push("a", 1);
        q.push("a", 1);
        q.push("b", 2);
        q.push("a", 7);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop().await.unwrap(), "a");
        assert_eq!(q.pop().await.unwrap(), "b");
        q.close();
        assert_eq!(q.pop().await, None);
    }
}
