//! Users, groups and resource limits: the daemon's `user`, `group` and `rlimits` keys, shared
//! with the per-worker settings.
//!
//! The daemon resolves its identity at start (an unknown user or group is a configuration
//! error naming the key), binds its socket, locks its pid file and opens its log as root,
//! hands those files to the new user, applies its `rlimits` (raising a hard limit needs root)
//! and then drops privileges irreversibly with [`Identity::become_it`]: `setgroups`, then
//! `setresgid`, then `setresuid`, checked with `getresuid`/`getresgid` and by a `setuid(0)`
//! that must fail. Every worker is forked after the drop.
//!
//! What runs as root: the [`Daemon::setup`](crate::Daemon::setup) steps (they run before
//! the bind, so a step can open a privileged port or read a root-only key; anything it
//! creates stays root's), the `daemon.start` listeners, and the bind itself. Everything
//! after, the loop, every method, every listener and every worker, runs as the user.
//!
//! The files: the unix socket file, the pid file and the log file are chowned to the user
//! before the drop, so `socketpeers: "owner"` means the new user, the pid file can be
//! rewritten and the log reopened (SIGUSR1, `daemon.reopenlogs`) in place. Removing the
//! socket and the pid file at stop, and creating a new log file after logrotate moved the
//! old one away, need write permission on their directories, which a chown of the file
//! cannot give: put them in a directory the user owns (systemd's `RuntimeDirectory=`,
//! `LogsDirectory=`, or a `/run/NAME` made by the packaging). When a directory is not
//! writable by the user the daemon says so at start (a warning naming the key) and at stop
//! warns that it could not remove the file; the pid file left behind names a dead process
//! and is taken over as stale at the next start, the socket file is removed as stale too.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{self, Gid, Group, Uid, User};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Who a process runs as: the resolved `user` and `group` with the supplementary groups of
/// the group database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's name (or its number, for a uid with no passwd entry).
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The supplementary groups (the primary group included).
    pub groups: Vec<u32>,
}

/// Looks a user up by name or by number.
fn find_user(key: &str, user: &str) -> Result<User> {
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    };
    match found {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(Error::config(key, format!("no such user: {user:?}"))),
        Err(e) => Err(Error::config(
            key,
            format!("cannot look up user {user:?}: {e}"),
        )),
    }
}

/// Looks a group up by name or by number.
fn find_group(key: &str, group: &str) -> Result<u32> {
    let found = match group.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(group),
    };
    match found {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        // A number with no group entry is still a group id the kernel accepts.
        Ok(None) => group
            .parse::<u32>()
            .map_err(|_| Error::config(key, format!("no such group: {group:?}"))),
        Err(e) => Err(Error::config(
            key,
            format!("cannot look up group {group:?}: {e}"),
        )),
    }
}

impl Identity {
    /// Resolves `user` (a name or a uid) and `group` (a name or a gid; default the user's
    /// primary group). `prefix` is put before the key names in errors (`""` for the
    /// daemon's keys, `"workers.NAME."` for a worker's).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `user` or `group` when one is unknown.
    pub fn resolve(prefix: &str, user: &str, group: Option<&str>) -> Result<Identity> {
        let user_key = format!("{prefix}user");
        let group_key = format!("{prefix}group");
        let u = find_user(&user_key, user)?;
        let gid = match group {
            Some(g) => find_group(&group_key, g)?,
            None => u.gid.as_raw(),
        };
        let cname = CString::new(u.name.as_bytes())
            .map_err(|_| Error::config(&user_key, "a user name with a NUL byte"))?;
        let mut groups: Vec<u32> = unistd::getgrouplist(&cname, Gid::from_raw(gid))
            .map_err(|e| {
                Error::config(
                    &user_key,
                    format!("cannot list the groups of {user:?}: {e}"),
                )
            })?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(Identity {
            name: u.name,
            uid: u.uid.as_raw(),
            gid,
            groups,
        })
    }

    /// Whether the calling process already is this identity (nothing to drop).
    pub fn is_current(&self) -> bool {
        unistd::geteuid().as_raw() == self.uid && unistd::getegid().as_raw() == self.gid
    }

    /// Checks that the calling process can become this identity: it is root, or already is it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `key` when the process is not root and is someone else.
    pub fn check_switchable(&self, key: &str) -> Result<()> {
        let euid = unistd::geteuid().as_raw();
        if euid != 0 && euid != self.uid {
            return Err(Error::config(
                key,
                format!(
                    "the daemon runs as uid {euid}, not root: it cannot switch to user {} (uid {})",
                    self.name, self.uid
                ),
            ));
        }
        Ok(())
    }

    /// Drops privileges for good: supplementary groups, then the group, then the user (real,
    /// effective and saved ids), and checks it took.
    ///
    /// Only the system calls below run, so this is also fit for a forked child.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `key` with the failing step.
    pub fn become_it(&self, key: &str) -> Result<()> {
        let fail = |what: &str, e: nix::Error| {
            Error::config(key, format!("cannot become {} ({what}): {e}", self.name))
        };
        if unistd::geteuid().is_root() {
            let groups: Vec<Gid> = self.groups.iter().map(|&g| Gid::from_raw(g)).collect();
            unistd::setgroups(&groups).map_err(|e| fail("setgroups", e))?;
        }
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        unistd::setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
        unistd::setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
        let ru = unistd::getresuid().map_err(|e| fail("getresuid", e))?;
        let rg = unistd::getresgid().map_err(|e| fail("getresgid", e))?;
        if [ru.real, ru.effective, ru.saved] != [uid; 3]
            || [rg.real, rg.effective, rg.saved] != [gid; 3]
        {
            return Err(Error::config(
                key,
                format!("cannot become {}: the ids did not all change", self.name),
            ));
        }
        if self.uid != 0 && unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(Error::config(
                key,
                format!(
                    "privileges not dropped: setuid(0) still works after becoming {}",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// Gives `path` to this identity (so the dropped daemon can rewrite, reopen or remove it).
    ///
    /// # Errors
    ///
    /// [`Error::Path`] when chown fails.
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| Error::path(path, "giving the file to the daemon's user", e))
    }

    /// Whether this identity may remove entries of the directory holding `path` (write
    /// permission on it, by owner, group or others).
    pub fn can_remove(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = path.parent() else {
            return false;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(m) = std::fs::metadata(dir) else {
            return false;
        };
        let mode = m.mode();
        if m.uid() == self.uid {
            mode & 0o300 == 0o300
        } else if self.groups.contains(&m.gid()) || m.gid() == self.gid {
            mode & 0o030 == 0o030
        } else {
            mode & 0o003 == 0o003
        }
    }
}

/// One resource limit: soft and hard, `None` for unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit (what the process gets), `None` for unlimited.
    pub soft: Option<u64>,
    /// The hard limit (the ceiling the soft limit may be raised to), `None` for unlimited.
    pub hard: Option<u64>,
}

/// The resource names `rlimits` knows, with their kernel resource.
const RESOURCES: &[(&str, Resource)] = &[
    ("as", Resource::RLIMIT_AS),
    ("core", Resource::RLIMIT_CORE),
    ("cpu", Resource::RLIMIT_CPU),
    ("data", Resource::RLIMIT_DATA),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("locks", Resource::RLIMIT_LOCKS),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE),
    ("nice", Resource::RLIMIT_NICE),
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("rss", Resource::RLIMIT_RSS),
    ("rtprio", Resource::RLIMIT_RTPRIO),
    ("sigpending", Resource::RLIMIT_SIGPENDING),
    ("stack", Resource::RLIMIT_STACK),
];

fn resource(name: &str) -> Option<Resource> {
    RESOURCES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Resource limits by name (`nofile`, `core`, `nproc`, `as`, `memlock`, `stack`, `cpu`,
/// `fsize`, `data`, `locks`, `msgqueue`, `nice`, `rss`, `rtprio`, `sigpending`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rlimits(pub BTreeMap<String, Limit>);

/// One limit value: an integer, `"unlimited"`, or `null` (also unlimited).
fn one(v: &Value) -> Option<Option<u64>> {
    match v {
        Value::String(s) if s == "unlimited" => Some(None),
        Value::Number(_) => v.as_u64().map(Some),
        _ => None,
    }
}

fn show(v: Option<u64>) -> Value {
    v.map_or(json!("unlimited"), |n| json!(n))
}

impl Rlimits {
    /// Parses `{"nofile": 4096, "core": "unlimited", "stack": [8388608, 16777216]}`: a value
    /// is an integer (soft = hard), `"unlimited"`, or `[soft, hard]`. `key` names the whole
    /// object in errors (`"rlimits"`, `"workers.NAME.rlimits"`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `KEY.RESOURCE` for an unknown resource, a bad value or a
    /// soft limit above the hard one.
    pub fn from_json(key: &str, value: &Value) -> Result<Rlimits> {
        let obj = match value {
            Value::Null => return Ok(Rlimits::default()),
            Value::Object(obj) => obj,
            _ => {
                return Err(Error::config(
                    key,
                    format!("expected an object of resource limits, got {value}"),
                ));
            }
        };
        let mut out = BTreeMap::new();
        for (name, v) in obj {
            let k = format!("{key}.{name}");
            if resource(name).is_none() {
                let known: Vec<&str> = RESOURCES.iter().map(|(n, _)| *n).collect();
                return Err(Error::config(
                    k,
                    format!("unknown resource; known: {}", known.join(", ")),
                ));
            }
            let bad = || {
                Error::config(
                    &k,
                    format!("expected an integer, \"unlimited\" or [soft, hard], got {v}"),
                )
            };
            let limit = match v {
                Value::Array(pair) if pair.len() == 2 => Limit {
                    soft: one(&pair[0]).ok_or_else(bad)?,
                    hard: one(&pair[1]).ok_or_else(bad)?,
                },
                _ => {
                    let n = one(v).ok_or_else(bad)?;
                    Limit { soft: n, hard: n }
                }
            };
            if let (Some(s), h) = (limit.soft, limit.hard)
                && h.is_some_and(|h| s > h)
            {
                return Err(Error::config(
                    k,
                    format!(
                        "the soft limit {s} is above the hard limit {}",
                        limit.hard.unwrap_or(0)
                    ),
                ));
            }
            out.insert(name.clone(), limit);
        }
        Ok(Rlimits(out))
    }

    /// The limits as JSON, in the shape [`Rlimits::from_json`] reads.
    pub fn to_json(&self) -> Value {
        let map = self
            .0
            .iter()
            .map(|(n, l)| {
                let v = if l.soft == l.hard {
                    show(l.soft)
                } else {
                    json!([show(l.soft), show(l.hard)])
                };
                (n.clone(), v)
            })
            .collect();
        Value::Object(map)
    }

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies every limit to the calling process. Only getrlimit/setrlimit run (fit for a
    /// forked child).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `KEY.RESOURCE` when a hard limit would be raised without
    /// root, or setrlimit refuses.
    pub fn apply(&self, key: &str) -> Result<()> {
        const INF: u64 = nix::libc::RLIM_INFINITY;
        for (name, limit) in &self.0 {
            let Some(res) = resource(name) else { continue };
            let k = format!("{key}.{name}");
            let (soft, hard) = (limit.soft.unwrap_or(INF), limit.hard.unwrap_or(INF));
            let (_, cur_hard) =
                getrlimit(res).map_err(|e| Error::config(&k, format!("getrlimit: {e}")))?;
            if hard > cur_hard && !unistd::geteuid().is_root() {
                return Err(Error::config(
                    k,
                    format!(
                        "{} is above the hard limit {} and only root may raise it",
                        show(limit.hard),
                        show((cur_hard != INF).then_some(cur_hard)),
                    ),
                ));
            }
            setrlimit(res, soft, hard).map_err(|e| {
                Error::config(
                    &k,
                    format!(
                        "cannot set {} / {}: {e}",
                        show(limit.soft),
                        show(limit.hard)
                    ),
                )
            })?;
        }
        Ok(())
    }
}

/// The soft descriptor limit the daemon started with, when it raised it (0: it did not).
static STARTED_NOFILE: AtomicU64 = AtomicU64::new(0);

/// The highest soft descriptor limit the daemon raises itself to: the kernel's default
/// `fs.nr_open`. (Some containers give a hard limit near 2^30.)
const NOFILE_CEILING: u64 = 1 << 20;

/// Raises the daemon's soft `RLIMIT_NOFILE` to its hard limit (capped at
/// [`NOFILE_CEILING`]), as systemd advises programs that poll with epoll to do (the soft
/// 1024 is for `select`): every worker costs the daemon a descriptor or three, and each
/// connection one. A forked worker gets the limit it started with back
/// ([`restore_nofile_in_child`]). Returns the limits before and after, when it raised them.
pub(crate) fn raise_nofile() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let want = hard.min(NOFILE_CEILING);
    if soft >= want || setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_err() {
        return None;
    }
    STARTED_NOFILE.store(soft, Ordering::Relaxed);
    Some((soft, want))
}

/// In a forked worker: the soft descriptor limit the daemon started with, if it raised
/// its own. Only getrlimit/setrlimit (async-signal-safe system calls) and an atomic load.
pub(crate) fn restore_nofile_in_child() {
    let soft = STARTED_NOFILE.load(Ordering::Relaxed);
    if soft == 0 {
        return;
    }
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimits_parse_and_round_trip() {
        let v = json!({"nofile": 256, "core": "unlimited", "stack": [8388608, "unlimited"]});
        let r = Rlimits::from_json("rlimits", &v).unwrap();
        assert_eq!(
            r.0["nofile"],
            Limit {
                soft: Some(256),
                hard: Some(256)
            }
        );
        assert_eq!(
            r.0["core"],
            Limit {
                soft: None,
                hard: None
            }
        );
        assert_eq!(r.0["stack"].hard, None);
        assert_eq!(Rlimits::from_json("rlimits", &r.to_json()).unwrap(), r);
    }

    #[test]
    fn rlimits_errors_name_the_key() {
        for (v, key) in [
            (json!({"bogus": 1}), "rlimits.bogus"),
            (json!({"nofile": -1}), "rlimits.nofile"),
            (json!({"nofile": [10, 5]}), "rlimits.nofile"),
            (json!({"nofile": "lots"}), "rlimits.nofile"),
            (json!(5), "rlimits"),
        ] {
            let e = Rlimits::from_json("rlimits", &v).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn unknown_user_and_group_are_named() {
        let e = Identity::resolve("", "no-such-user-daimon", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("user") && e.contains("no-such-user-daimon"),
            "{e}"
        );
        let e = Identity::resolve("workers.a.", "root", Some("no-such-group-daimon"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers.a.group"), "{e}");
    }

    #[test]
    fn root_resolves_with_groups() {
        let id = Identity::resolve("", "0", None).unwrap();
        assert_eq!((id.uid, id.gid, id.name.as_str()), (0, 0, "root"));
        assert!(id.groups.contains(&0));
    }
}
