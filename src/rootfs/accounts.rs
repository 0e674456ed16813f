//! The files of a `[layer.accounts]` source: /etc/passwd, /etc/group,
//! /etc/shadow, /etc/gshadow (every password locked) and /etc/nsswitch.conf,
//! with Debian 12's modes and owners.

use crate::spec::{Accounts, Owner};

/// The image paths an accounts source writes; no other source may.
pub const PATHS: [&str; 5] = [
    "etc/group",
    "etc/gshadow",
    "etc/nsswitch.conf",
    "etc/passwd",
    "etc/shadow",
];

/// One generated file: image path, bytes, mode, owner.
pub struct File {
    pub path: &'static str,
    pub data: Vec<u8>,
    pub mode: u32,
    pub owner: Owner,
}

/// glibc's lookups in files only, as Debian's default nsswitch.conf has
/// them (libc-bin's postinst copies it), without the `db` and `nis`
/// services, whose modules the image does not have.
const NSSWITCH: &str = "\
# /etc/nsswitch.conf, written by mpsi from the spec's [layer.accounts]:
# the accounts live in the files below; names resolve through /etc/hosts
# (which container engines provide) and DNS.

passwd:         files
group:          files
shadow:         files
gshadow:        files

hosts:          files dns
networks:       files

protocols:      files
services:       files
ethers:         files
rpc:            files
";

/// The files for these accounts. `epoch` (the image's SOURCE_DATE_EPOCH)
/// dates the last password change in /etc/shadow, so the bytes stay
/// reproducible.
pub fn files(a: &Accounts, epoch: u64) -> Vec<File> {
    let days = epoch / 86_400;
    let mut passwd = String::new();
    let mut shadow = String::new();
    for u in &a.users {
        passwd += &format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            u.name, u.uid, u.gid, u.gecos, u.home, u.shell
        );
        // `*`: no password matches, the account is locked; aging as
        // Debian's adduser sets it for system accounts.
        shadow += &format!("{}:*:{days}:0:99999:7:::\n", u.name);
    }
    let mut group = String::new();
    let mut gshadow = String::new();
    for g in &a.groups {
        let members = g.members.join(",");
        group += &format!("{}:x:{}:{members}\n", g.name, g.gid);
        gshadow += &format!("{}:*::{members}\n", g.name);
    }
    // Debian 12: readable by group shadow (for unix_chkpwd and the like)
    // when that group exists, else by root only.
    let (secret_mode, secret_owner) = match a.group("shadow") {
        Some(g) => (
            0o640,
            Owner {
                gid: g.gid.into(),
                group: g.name.clone(),
                ..root(a)
            },
        ),
        None => (0o600, root(a)),
    };
    vec![
        File {
            path: "etc/group",
            data: group.into_bytes(),
            mode: 0o644,
            owner: root(a),
        },
        File {
            path: "etc/gshadow",
            data: gshadow.into_bytes(),
            mode: secret_mode,
            owner: secret_owner.clone(),
        },
        File {
            path: "etc/nsswitch.conf",
            data: NSSWITCH.as_bytes().to_vec(),
            mode: 0o644,
            owner: root(a),
        },
        File {
            path: "etc/passwd",
            data: passwd.into_bytes(),
            mode: 0o644,
            owner: root(a),
        },
        File {
            path: "etc/shadow",
            data: shadow.into_bytes(),
            mode: secret_mode,
            owner: secret_owner,
        },
    ]
}

/// 0:0 with the names the accounts give them.
fn root(a: &Accounts) -> Owner {
    Owner {
        uid: 0,
        gid: 0,
        user: a.user_by_uid(0).map_or("root", |u| &u.name).into(),
        group: a.group_by_gid(0).map_or("root", |g| &g.name).into(),
    }
}
