//! Work split over the machine's cores with scoped threads (parsing and reading a whole
//! commit are CPU-bound and run on every core).

/// Threads to split CPU-bound work over: the available cores, at most 8.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// `work` applied to each of `parts`, each on its own thread; the results in the order of
/// `parts`. A panic in a worker is resumed on the caller's thread.
pub(crate) fn map_parts<P: Send, T: Send>(parts: Vec<P>, work: impl Fn(P) -> T + Sync) -> Vec<T> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_order_of_the_parts() {
        let parts: Vec<u64> = (0..6).collect();

        let squares = map_parts(parts, |n| {
            std::thread::sleep(std::time::Duration::from_millis(6 - n));
            n * n
        });

        assert_eq!(squares, [0, 1, 4, 9, 16, 25]);
    }
}
