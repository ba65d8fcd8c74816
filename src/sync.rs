//! Locking std mutexes whose poisoning means nothing.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning.
///
/// Only for mutexes never held across code that can panic halfway through
/// an update (plain values, replaced or edited in one step): a panic
/// elsewhere while holding one leaves what it guards consistent, so there is
/// nothing to refuse.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_locks_with_its_value() {
        let mutex = Mutex::new(7);
        let poisoner = std::panic::catch_unwind(|| {
            let _guard = mutex.lock().unwrap();
            panic!("poisons the mutex");
        });
        assert!(poisoner.is_err());
        assert!(mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 8);
    }
}
