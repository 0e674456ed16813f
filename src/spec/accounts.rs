//! `[layer.accounts]`: the image's users and groups, declared in the spec and
//! written by mpsi into /etc/passwd, /etc/group, /etc/shadow and
//! /etc/gshadow (see `rootfs::accounts`). Owners elsewhere in the spec may
//! name these accounts (`owner = "mysql:mysql"`).

use super::{Ctx, Loc, SpecError};
use serde::Deserialize;
use toml::Spanned;

/// The declared accounts, in spec order (the files list them in that order).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub groups: Vec<Group>,
    pub users: Vec<User>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    /// Supplementary members (user names), as in /etc/group's last field.
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// The primary group's id.
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

impl Accounts {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
    pub fn user_by_uid(&self, uid: u64) -> Option<&User> {
        self.users.iter().find(|u| u64::from(u.uid) == uid)
    }
    pub fn group_by_gid(&self, gid: u64) -> Option<&Group> {
        self.groups.iter().find(|g| u64::from(g.gid) == gid)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccounts {
    #[serde(default)]
    group: Vec<RawGroup>,
    #[serde(default)]
    user: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    gid: i64,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    uid: i64,
    group: String,
    #[serde(default)]
    gecos: String,
    home: String,
    shell: String,
}

/// Whether shadow-utils' useradd/groupadd (and Debian's adduser) accept a
/// name: a lowercase letter or `_` first, then lowercase letters, digits,
/// `_` and `-`, an optional `$` last (machine accounts), at most 32 bytes.
/// Stricter than glibc, which reads anything without ':' or newline, so
/// that every tool in the image reads the names alike.
fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    let body = b.strip_suffix(b"$").unwrap_or(b);
    !body.is_empty()
        && b.len() <= 32
        && (body[0].is_ascii_lowercase() || body[0] == b'_')
        && body
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// An id that fits uid_t/gid_t and is not (uid_t)-1, which means "no
/// change" to chown and setresuid.
fn valid_id(id: i64) -> Option<u32> {
    u32::try_from(id).ok().filter(|&i| i != u32::MAX)
}

pub(super) fn accounts(ctx: &Ctx, raw: RawAccounts, at: &Loc) -> Result<Accounts, SpecError> {
    let mut out = Accounts::default();
    for g in raw.group {
        let span = g.name.span();
        let name = g.name.into_inner();
        let what = format!("layer.accounts.group {name:?}");
        if !valid_name(&name) {
            return ctx.err(span, &what, name_rule());
        }
        let Some(gid) = valid_id(g.gid) else {
            return ctx.err(
                span,
                &what,
                format!("gid {} is not between 0 and 4294967294", g.gid),
            );
        };
        if out.group(&name).is_some() {
            return ctx.err(span, &what, "this group name is declared twice");
        }
        if let Some(other) = out.group_by_gid(gid.into()) {
            return ctx.err(
                span,
                &what,
                format!("gid {gid} is already group {:?}'s", other.name),
            );
        }
        out.groups.push(Group {
            name,
            gid,
            members: g.members,
        });
    }
    for u in raw.user {
        let span = u.name.span();
        let name = u.name.into_inner();
        let what = format!("layer.accounts.user {name:?}");
        if !valid_name(&name) {
            return ctx.err(span, &what, name_rule());
        }
        let Some(uid) = valid_id(u.uid) else {
            return ctx.err(
                span,
                &what,
                format!("uid {} is not between 0 and 4294967294", u.uid),
            );
        };
        if out.user(&name).is_some() {
            return ctx.err(span, &what, "this user name is declared twice");
        }
        if let Some(other) = out.user_by_uid(uid.into()) {
            return ctx.err(
                span,
                &what,
                format!("uid {uid} is already user {:?}'s", other.name),
            );
        }
        let Some(gid) = out.group(&u.group).map(|g| g.gid) else {
            return ctx.err(
                span,
                &what,
                format!(
                    "its group {:?} is not declared; add a [[layer.accounts.group]] with that name",
                    u.group
                ),
            );
        };
        let shell = u.shell;
        for (field, v) in [("home", &u.home), ("shell", &shell)] {
            if !v.starts_with('/') || v.contains([':', '\n', '\0']) {
                return ctx.err(
                    span,
                    &what,
                    format!("{field} {v:?} must be an absolute path without ':' or newlines"),
                );
            }
        }
        if u.gecos.contains([':', '\n', '\0']) {
            return ctx.err(
                span,
                &what,
                format!("gecos {:?} must not hold ':' or newlines", u.gecos),
            );
        }
        out.users.push(User {
            name,
            uid,
            gid,
            gecos: u.gecos,
            home: u.home,
            shell,
        });
    }
    for g in &out.groups {
        if let Some(m) = g.members.iter().find(|m| out.user(m).is_none()) {
            return Err(at.error(
                &format!("group {:?} members", g.name),
                format!("{m:?} is not a declared user"),
            ));
        }
    }
    Ok(out)
}

fn name_rule() -> &'static str {
    "is not a name useradd/groupadd accept: a lowercase letter or '_' first, then lowercase \
     letters, digits, '_' or '-' (a '$' may end it), at most 32 characters"
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_follow_useradd() {
        for ok in ["root", "mysql", "_apt", "systemd-network", "host$", "a1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Root", "1abc", "-x", "a:b", "a b", "$", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
