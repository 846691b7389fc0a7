#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

fn entry(ctx: u32, budget: usize, since: u64, timeout: u64) -> Entry<&'static str> {
    Entry { ctx, since, deadline: since + timeout, budget, count_key: format!("k{budget}"), item: "" }
}

/// Admits the contexts in `room` (each once), keeps the others waiting; records every turn.
#[derive(Default)]
struct Script {
    room: Vec<u32>,
    retried: Vec<u32>,
    admitted: Vec<u32>,
    timed_out: Vec<u32>,
}

impl Turns<&'static str> for Script {
    fn timed_out(&mut self, e: Entry<&'static str>) {
        self.timed_out.push(e.ctx);
    }
    fn retry(&mut self, e: Entry<&'static str>) -> Option<Entry<&'static str>> {
        self.retried.push(e.ctx);
        match self.room.iter().position(|&c| c == e.ctx) {
            Some(i) => {
                self.room.remove(i);
                self.admitted.push(e.ctx);
                None
            }
            None => Some(e),
        }
    }
}

#[test]
fn turns_come_in_arrival_order_and_stop_at_the_first_that_does_not_fit() {
    let mut q = Queues::default();
    for ctx in 1..=4 {
        q.push("acme".into(), entry(ctx, 0, 100 + u64::from(ctx), 1000));
    }
    // Room for 1 and for 3: 3 must not overtake 2.
    let mut s = Script { room: vec![1, 3], ..Script::default() };
    q.pass(200, &mut s);
    assert_eq!(s.retried, vec![1, 2]);
    assert_eq!(s.admitted, vec![1]);
    assert_eq!(q.len(), 3);
    let mut s = Script { room: vec![2, 3, 4], ..Script::default() };
    q.pass(300, &mut s);
    assert_eq!(s.admitted, vec![2, 3, 4]);
    assert!(q.is_empty(), "an emptied queue is dropped");
}

#[test]
fn each_subject_and_budget_has_its_own_queue() {
    let mut q = Queues::default();
    q.push("acme".into(), entry(1, 0, 0, 1000));
    q.push("acme".into(), entry(2, 1, 0, 1000));
    q.push("beta".into(), entry(3, 0, 0, 1000));
    q.push("acme".into(), entry(4, 0, 0, 1000));
    // acme's budget-0 head does not fit; the other queues still get their turn.
    let mut s = Script { room: vec![2, 3, 4], ..Script::default() };
    q.pass(10, &mut s);
    assert_eq!(s.retried, vec![1, 2, 3], "queues in (subject, budget) order; 4 waits behind 1");
    assert_eq!(s.admitted, vec![2, 3]);
    assert_eq!(q.len(), 2);
}

#[test]
fn timeouts_leave_at_the_head_and_behind_a_head_that_waits() {
    let mut q = Queues::default();
    q.push("acme".into(), entry(1, 0, 0, 100)); // head, times out at 100
    q.push("acme".into(), entry(2, 0, 0, 1000)); // waits
    q.push("acme".into(), entry(3, 0, 0, 50)); // behind 2, timed out
    q.push("acme".into(), entry(4, 0, 0, 5000)); // behind 2, in time
    let mut s = Script::default();
    q.pass(100, &mut s);
    assert_eq!(s.timed_out, vec![1, 3]);
    assert_eq!(s.retried, vec![2], "a timed-out request is never decided again");
    assert_eq!(q.len(), 2);
    // The deadline itself is a timeout.
    let mut s = Script { room: vec![4], ..Script::default() };
    q.pass(1000, &mut s);
    assert_eq!(s.timed_out, vec![2]);
    assert_eq!(s.admitted, vec![4]);
    assert!(q.is_empty());
}

#[test]
fn a_cancelled_request_leaves_its_queue_and_keeps_the_order_of_the_others() {
    let mut q = Queues::default();
    for ctx in 1..=3 {
        q.push("acme".into(), entry(ctx, 0, 0, 1000));
    }
    assert!(q.cancel(9).is_none());
    let e = q.cancel(2).unwrap();
    assert_eq!((e.ctx, e.count_key.as_str()), (2, "k0"));
    let mut s = Script { room: vec![1, 3], ..Script::default() };
    q.pass(10, &mut s);
    assert_eq!(s.retried, vec![1, 3]);
    q.push("acme".into(), entry(5, 0, 0, 1000));
    assert!(q.cancel(5).is_some());
    assert!(q.is_empty(), "the last one out drops its queue");
}
