//! Frees big structures off the command's critical path. A 10,000-rule
//! apply ends holding the parsed config, the compiled set, the plan and
//! two states: tens of thousands of allocations whose frees took ~5 ms
//! before `sg apply` could print and exit. Exiting takes the whole heap
//! back at once, so the CLI need not wait for them; a long-running caller
//! (the agent, the tests) still gets the memory back.

/// Drops `value` on a thread of its own, which the process does not wait
/// for at exit.
pub fn later<T: Send + 'static>(value: T) {
    // If no thread can be made, the closure (and `value`) drops here.
    let _ = std::thread::Builder::new()
        .name("sg-reclaim".to_string())
        .spawn(move || drop(value));
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    /// Says on `done` when it is dropped, and on which thread.
    struct Signal(mpsc::Sender<std::thread::ThreadId>);

    impl Drop for Signal {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn a_value_handed_over_is_dropped_on_another_thread() {
        let (tx, rx) = mpsc::channel();
        super::later(Signal(tx));
        let dropped_on = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the value was never dropped");
        assert_ne!(dropped_on, std::thread::current().id());
    }
}
