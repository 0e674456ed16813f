//! The files of a `[layer.accounts]` source: /etc/passwd, /etc/group,
//! /etc/shadow, /etc/gshadow (every password locked) and /etc/nsswitch.conf,
//! with Debian 12's modes and owners; and the image-wide check of every
//! owner and login shell against the declared accounts.

use super::{Entry, Origin};
use crate::elf::view::{MergedView, Node};
use crate::spec::{Accounts, Loc, Owner};
use anyhow::Result;

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

/// Checks the whole image (its layers' entries, in order) against its
/// declared accounts: only the accounts source writes the account files
/// (a package or tree shipping /etc/passwd would otherwise shadow or be
/// shadowed silently), and every owner in the image is a declared account
/// of the same name, so `ls -l` and tar agree with /etc/passwd.
pub fn check(
    accounts: Option<(&Accounts, &Loc)>,
    names: &[&str],
    layers: &[Vec<Entry>],
) -> Result<()> {
    let Some((a, at)) = accounts else {
        return Ok(());
    };
    let mut problems = Vec::new();
    for (layer, entries) in names.iter().zip(layers) {
        for e in entries.iter() {
            let here = || format!("/{} (layer {layer:?}, {})", e.path, e.origin.describe());
            if PATHS.contains(&e.path.as_str()) && !matches!(e.origin, Origin::Accounts(_)) {
                problems.push(format!(
                    "{} would replace or hide the file [layer.accounts] writes; leave it out of that source",
                    here()
                ));
            }
            let o = &e.owner;
            match a.user_by_uid(o.uid) {
                None => problems.push(format!(
                    "{} is owned by uid {} ({:?}), which [layer.accounts] does not declare; declare that user with this id",
                    here(),
                    o.uid,
                    o.user
                )),
                Some(u) if !o.user.is_empty() && u.name != o.user => problems.push(format!(
                    "{} is owned by uid {} named {:?}, but [layer.accounts] names uid {} {:?}",
                    here(),
                    o.uid,
                    o.user,
                    o.uid,
                    u.name
                )),
                Some(_) => {}
            }
            match a.group_by_gid(o.gid) {
                None => problems.push(format!(
                    "{} is owned by gid {} ({:?}), which [layer.accounts] does not declare; declare that group with this id",
                    here(),
                    o.gid,
                    o.group
                )),
                Some(g) if !o.group.is_empty() && g.name != o.group => problems.push(format!(
                    "{} is owned by gid {} named {:?}, but [layer.accounts] names gid {} {:?}",
                    here(),
                    o.gid,
                    o.group,
                    o.gid,
                    g.name
                )),
                Some(_) => {}
            }
        }
    }
    // A login shell missing from the image makes `su USER` and pwck fail.
    let view = MergedView::from_layers(layers);
    for u in &a.users {
        if !matches!(view.resolve(&u.shell), Ok(f) if matches!(f.node, Node::File(_))) {
            problems.push(format!(
                "user {:?}: its shell {} is not a file in the image; choose one the image has",
                u.name, u.shell
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the image disagrees with its declared accounts ({at}), {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    )
}
