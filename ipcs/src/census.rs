//! Who holds the service's client slots: connections, and handshakes
//! whose rings were made and sent (waiting for the confirmation), counted
//! in total, per user and per process, against the options' limits.

use std::collections::HashMap;

use ringlink_common::wire::Status;
use ringlink_common::Credentials;

use crate::ServiceOptions;

/// The slots held, and by whom.
#[derive(Debug, Default)]
pub(crate) struct Census {
    total: usize,
    per_uid: HashMap<u32, usize>,
    per_pid: HashMap<i32, usize>,
}

impl Census {
    /// Whether a client with `creds` may take one more slot: `Ok`, or the
    /// rejection to send.
    pub(crate) fn check(&self, creds: &Credentials, opts: &ServiceOptions) -> Result<(), Status> {
        if self.total >= opts.max_clients {
            return Err(Status::TooManyClients);
        }
        let uid_held = self.per_uid.get(&creds.uid).copied().unwrap_or(0);
        if opts.max_clients_per_uid.is_some_and(|max| uid_held >= max) {
            return Err(Status::UserQuota);
        }
        let pid_held = self.per_pid.get(&creds.pid).copied().unwrap_or(0);
        if opts.max_clients_per_pid.is_some_and(|max| pid_held >= max) {
            return Err(Status::ProcessQuota);
        }
        Ok(())
    }

    /// Counts a slot taken by `creds` (after [`check`](Self::check)).
    pub(crate) fn admit(&mut self, creds: &Credentials) {
        self.total += 1;
        *self.per_uid.entry(creds.uid).or_default() += 1;
        *self.per_pid.entry(creds.pid).or_default() += 1;
    }

    /// Gives back a slot [`admit`](Self::admit)ted for `creds`.
    pub(crate) fn release(&mut self, creds: &Credentials) {
        self.total = self.total.saturating_sub(1);
        release_one(&mut self.per_uid, creds.uid);
        release_one(&mut self.per_pid, creds.pid);
    }
}

/// One less for `key`; entries at zero are removed, so the maps hold
/// only the users and processes that hold slots now.
fn release_one<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(key) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (see
/// [`ServiceOptions::raise_fd_limit`]). Best effort: a failure leaves the
/// limit as it was.
pub(crate) fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(uid: u32, pid: i32) -> Credentials {
        Credentials { pid, uid, gid: 0 }
    }

    #[test]
    fn limits_total_user_and_process() {
        let o = ServiceOptions {
            max_clients: 5,
            max_clients_per_uid: Some(3),
            max_clients_per_pid: Some(2),
            ..ServiceOptions::default()
        };
        let mut c = Census::default();
        let a = creds(1000, 10);
        c.admit(&a);
        c.admit(&a);
        assert_eq!(c.check(&a, &o), Err(Status::ProcessQuota));
        let a2 = creds(1000, 11);
        c.admit(&a2);
        assert_eq!(c.check(&a2, &o), Err(Status::UserQuota));
        let b = creds(0, 12);
        assert_eq!(c.check(&b, &o), Ok(()));
        c.admit(&b);
        c.admit(&creds(0, 13));
        assert_eq!(c.check(&creds(7, 14), &o), Err(Status::TooManyClients));
        c.release(&a);
        assert_eq!(c.check(&a, &o), Ok(()));
        for x in [a, a2, b, creds(0, 13)] {
            c.release(&x);
        }
        assert_eq!(c.total, 0);
        assert!(c.per_uid.is_empty() && c.per_pid.is_empty());
    }
}
