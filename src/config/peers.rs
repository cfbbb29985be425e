//! Who may connect to a unix control socket: the `socketpeers` key.

use serde_json::{Value, json};

/// Who may connect to a unix control socket (checked with `SO_PEERCRED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// Root and the user the daemon runs as.
    Owner,
    /// Anyone the file mode lets in.
    Any,
    /// Root and exactly these uids.
    Uids(Vec<u32>),
}

impl Peers {
    /// Whether a peer with `uid` may connect to a daemon running as `owner`.
    pub fn allows(&self, uid: u32, owner: u32) -> bool {
        match self {
            Peers::Any => true,
            Peers::Owner => uid == 0 || uid == owner,
            Peers::Uids(uids) => uid == 0 || uids.contains(&uid),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        match self {
            Peers::Owner => json!("owner"),
            Peers::Any => json!("any"),
            Peers::Uids(uids) => json!(uids),
        }
    }

    pub(super) fn from_json(value: &Value) -> Option<Peers> {
        match value {
            Value::String(s) if s == "owner" => Some(Peers::Owner),
            Value::String(s) if s == "any" => Some(Peers::Any),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<Vec<u32>>>()
                .map(Peers::Uids),
            _ => None,
        }
    }
}
