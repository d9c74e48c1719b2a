//! Synchronous work inside async code.

/// Runs synchronous, possibly slow work (a device's signature, a wait for
/// an HTTP answer) without stalling a multi-thread tokio runtime: inside
/// [`tokio::task::block_in_place`], which hands the worker's other tasks to
/// another thread first. On a current-thread runtime (where that is not
/// allowed) and outside any runtime, `f` runs inline.
pub(crate) fn off_executor<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
