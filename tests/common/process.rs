//! Child processes a test starts: killed and reaped when the test ends, passed or failed.

/// Kills and waits for every process in it when dropped.
pub(crate) struct Processes(pub(crate) Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
