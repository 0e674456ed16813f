//! The ELF closure check of an assemble: every program and library in the
//! image must load inside the image alone. For each ELF file of the merged
//! tree: its `PT_INTERP` is in the image; each `DT_NEEDED` resolves inside it
//! (see `search` for the order) to a file of the same class and machine;
//! each version it needs (`DT_VERNEED`) is defined (`DT_VERDEF`) by the
//! library it resolves to. Every problem is collected before failing, so one
//! run lists them all.
//!
//! Each file is resolved with its own search path first. A name a library
//! does not find itself counts as found when every object that loads it
//! resolves that name (glibc loads breadth first and reuses an object
//! already loaded under that name), as with systemd's private libraries.
//! Not modelled: a loader's `DT_RPATH` searched for its libraries' own
//! needs when the loader does not need that name itself, and
//! `LD_LIBRARY_PATH`.

pub mod needed;
pub mod read;
pub mod search;
pub mod view;

use crate::progress::{Reporter, Unit};
use crate::rootfs::Entry;
use anyhow::Context;
use rayon::prelude::*;
use read::ElfInfo;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use view::{MergedView, Miss, Node};

/// What the check found, for the assemble report.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ElfCheck {
    Passed {
        /// ELF programs and libraries checked.
        files: usize,
        /// `DT_NEEDED` entries resolved.
        needed: usize,
    },
    Skipped {
        reason: String,
    },
}

impl std::fmt::Display for ElfCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElfCheck::Passed { files, needed } => write!(
                f,
                "closure checked: {files} ELF files, {needed} needed libraries resolved inside the image"
            ),
            ElfCheck::Skipped { reason } => write!(f, "closure check skipped: {reason}"),
        }
    }
}

/// The image does not load inside itself; one line per problem.
#[derive(Debug)]
pub struct ClosureError {
    pub problems: Vec<String>,
}

impl std::error::Error for ClosureError {}

impl std::fmt::Display for ClosureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ELF closure check failed: {} problem(s); add the missing files to a layer, fix the \
             RUNPATH or symlink, or set [image] check_elf = false with a comment saying why",
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Checks the image made of these layers (in order), unless the spec turned
/// the check off (`skip` then holds the reason, for the report).
pub fn check_layers(
    layers: &[Vec<Entry>],
    skip: Option<String>,
    reporter: &dyn Reporter,
) -> anyhow::Result<ElfCheck> {
    match skip {
        Some(reason) => Ok(ElfCheck::Skipped { reason }),
        None => check(&MergedView::from_layers(layers), reporter),
    }
}

/// Checks every ELF file of the view; fails with a `ClosureError` listing
/// every problem, or with an I/O error naming the file it could not read.
pub fn check(view: &MergedView, reporter: &dyn Reporter) -> anyhow::Result<ElfCheck> {
    let conf = search::ld_so_conf(view)?;
    let files: Vec<_> = view.files().collect();
    let task = reporter.task(
        "checking ELF closure",
        Some(files.len() as u64),
        Unit::Steps,
    );
    let read: Vec<(String, Result<Option<ElfInfo>, String>)> = files
        .par_iter()
        .map(|(path, data)| {
            task.advance(1);
            let elf =
                read::is_elf(data).with_context(|| format!("reading /{path} of the image"))?;
            let info = if elf {
                read::read(data).map_err(|e| format!("{e:#}"))
            } else {
                Ok(None)
            };
            Ok((path.to_string(), info))
        })
        .collect::<anyhow::Result<_>>()?;
    task.finish();
    let mut problems = Problems::default();
    let mut infos = BTreeMap::new();
    for (path, info) in read {
        match info {
            Ok(Some(i)) => {
                infos.insert(path, i);
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("{path}: not a readable ELF file: {e}")),
        }
    }
    let ctx = Ctx {
        view,
        infos: &infos,
        conf: &conf,
    };
    let mut res: BTreeMap<&str, Resolution> = infos
        .iter()
        .map(|(p, i)| (p.as_str(), ctx.resolve_file(p, i, &mut problems)))
        .collect();
    let mut loaders: HashMap<String, Vec<&str>> = HashMap::new();
    for (p, r) in &res {
        for lib in r.resolved.values() {
            loaders.entry(lib.clone()).or_default().push(p);
        }
    }
    let mut fills = Vec::new();
    for (p, r) in &res {
        for (name, msg) in &r.missing {
            match provided(&res, &loaders, p, name, &mut Vec::new()) {
                Some(lib) => fills.push((*p, name.clone(), lib)),
                None => problems.push(msg.clone()),
            }
        }
    }
    for (p, name, lib) in fills {
        res.get_mut(p)
            .expect("a checked file")
            .resolved
            .insert(name, lib);
    }
    let mut needed = 0;
    for (p, r) in &res {
        needed += r.resolved.len();
        ctx.check_versions(p, &infos[*p], &r.resolved, &mut problems);
    }
    if problems.list.is_empty() {
        Ok(ElfCheck::Passed {
            files: infos.len(),
            needed,
        })
    } else {
        problems.list.sort(); // grouped by file
        Err(ClosureError {
            problems: problems.list,
        }
        .into())
    }
}

/// The library a name resolves to in every program that loads `file`, when
/// `file` alone does not find it: glibc loads breadth first and matches a
/// needed name against the objects already loaded, and searches the
/// loaders' `DT_RPATH`s too, so a library may rely on what every one of its
/// loaders (or, in turn, their loaders) resolves. A file nobody loads (a
/// program, a plugin opened at run time) relies on itself only.
fn provided(
    res: &BTreeMap<&str, Resolution>,
    loaders: &HashMap<String, Vec<&str>>,
    file: &str,
    name: &str,
    stack: &mut Vec<String>,
) -> Option<String> {
    let ls = loaders.get(file)?;
    if stack.len() > 16 || stack.iter().any(|s| s == file) {
        return None;
    }
    stack.push(file.to_string());
    let mut found = None;
    for l in ls {
        let got = match res[l].resolved.get(name) {
            Some(g) => Some(g.clone()),
            None => provided(res, loaders, l, name, stack),
        };
        match got {
            Some(g) => found = Some(g),
            None => {
                found = None;
                break;
            }
        }
    }
    stack.pop();
    found
}

/// Problems in the order found, each once (a broken default directory
/// would otherwise be reported for every file).
#[derive(Default)]
struct Problems {
    list: Vec<String>,
    seen: HashSet<String>,
}

impl Problems {
    fn push(&mut self, p: String) {
        if self.seen.insert(p.clone()) {
            self.list.push(p);
        }
    }
}

struct Ctx<'a> {
    view: &'a MergedView,
    infos: &'a BTreeMap<String, ElfInfo>,
    conf: &'a [String],
}

/// One file's needed names: resolved (name -> library path), or missing
/// with the message to report unless its loaders provide it.
#[derive(Default)]
struct Resolution {
    resolved: BTreeMap<String, String>,
    missing: Vec<(String, String)>,
}

/// Where one `DT_NEEDED` name led.
struct Lookup {
    found: Option<String>,
    /// Candidates passed over (other class, dangling links), for the message.
    notes: Vec<String>,
    /// Why the search stopped short (a symlink loop or a link out of the
    /// image, a file that is not a loadable ELF object): reported instead.
    broken: Option<String>,
}

impl Ctx<'_> {
    /// Resolves one file's interpreter and needed names on its own.
    fn resolve_file(&self, path: &str, info: &ElfInfo, problems: &mut Problems) -> Resolution {
        if let Some(p) = info
            .interp
            .as_ref()
            .and_then(|i| self.interp_problem(i, info))
        {
            problems.push(format!("{path}: {p}"));
        }
        let origin = path.rsplit_once('/').map_or("", |(d, _)| d);
        let groups = search::order(
            info.rpath.as_deref(),
            info.runpath.as_deref(),
            origin,
            &info.kind,
            self.conf,
        );
        let dirs = self.search_dirs(path, &groups, problems);
        let mut r = Resolution::default();
        for name in &info.needed {
            let l = self.lookup(name, info, &dirs);
            match (l.found, l.broken) {
                (Some(lib), _) => {
                    r.resolved.insert(name.clone(), lib);
                }
                (None, Some(b)) => problems.push(format!("{path}: needs {name}: {b}")),
                (None, None) => r
                    .missing
                    .push((name.clone(), not_found(path, name, &groups, &l.notes))),
            }
        }
        r
    }

    /// Each version needed from a resolved library is defined by it. Needs
    /// from a library that did not resolve are already reported.
    fn check_versions(
        &self,
        path: &str,
        info: &ElfInfo,
        resolved: &BTreeMap<String, String>,
        problems: &mut Problems,
    ) {
        for need in &info.verneed {
            let Some(lib) = resolved.get(&need.file) else {
                continue;
            };
            // A library without version definitions satisfies any version
            // (glibc only warns), so there is nothing to check against.
            let Some(defs) = self.infos.get(lib).and_then(|i| i.verdef.as_ref()) else {
                continue;
            };
            for (v, weak) in &need.versions {
                if !weak && !defs.contains(v) {
                    problems.push(format!(
                        "{path}: needs {v} from {} (/{lib} {})",
                        need.file,
                        search::defined_summary(v, defs)
                    ));
                }
            }
        }
    }

    fn interp_problem(&self, interp: &str, info: &ElfInfo) -> Option<String> {
        match self.view.resolve(interp) {
            Ok(f) => match (f.node, self.infos.get(&f.path)) {
                (Node::File(_), Some(i)) if i.kind == info.kind => None,
                (Node::File(_), Some(i)) => Some(format!(
                    "its interpreter {interp} is {}, not {}",
                    i.kind, info.kind
                )),
                _ => Some(format!(
                    "its interpreter {interp} (/{}) is not an ELF program",
                    f.path
                )),
            },
            Err(Miss::Absent { dangling: None }) => {
                Some(format!("its interpreter {interp} is not in the image"))
            }
            Err(m) => Some(format!(
                "its interpreter {interp} is not in the image ({m})"
            )),
        }
    }

    /// The search directories as they resolve in the image (None: not
    /// there, or not knowable); a loop or an escape is a problem.
    fn search_dirs(
        &self,
        path: &str,
        groups: &[search::Group],
        problems: &mut Problems,
    ) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for g in groups {
            for d in &g.dirs {
                let Some(image) = &d.image else {
                    out.push(None);
                    continue;
                };
                out.push(match self.view.resolve(image) {
                    Ok(f) if matches!(f.node, Node::Dir) => Some(f.path),
                    Ok(_) => None,
                    Err(m) if m.is_broken() => {
                        problems.push(match g.label {
                            "RPATH" | "RUNPATH" => {
                                format!("{path}: {} entry {}: {m}", g.label, d.written)
                            }
                            label => format!("{label} directory {}: {m}", d.written),
                        });
                        None
                    }
                    Err(_) => None,
                });
            }
        }
        out
    }

    fn lookup(&self, name: &str, info: &ElfInfo, dirs: &[Option<String>]) -> Lookup {
        let mut notes = Vec::new();
        let candidates: Vec<String> = if name.contains('/') {
            // A path, not searched; a relative one names the working directory.
            match name.starts_with('/') {
                true => vec![name.to_string()],
                false => Vec::new(),
            }
        } else {
            dirs.iter()
                .flatten()
                .map(|d| {
                    if d.is_empty() {
                        name.to_string()
                    } else {
                        format!("{d}/{name}")
                    }
                })
                .collect()
        };
        // As glibc's open_path: a file of another class or machine is
        // passed over; one it cannot open (a symlink loop) or that is not a
        // loadable ELF object stops the search with an error.
        for c in candidates {
            let stop = match self.view.resolve(&c) {
                Ok(f) => match (f.node, self.infos.get(&f.path)) {
                    (Node::File(_), Some(i)) if i.kind == info.kind => {
                        return Lookup {
                            found: Some(f.path),
                            notes,
                            broken: None,
                        };
                    }
                    (Node::File(_), Some(i)) => {
                        notes.push(format!("skipped /{}: {}", f.path, i.kind));
                        None
                    }
                    (Node::File(_), None) => Some(format!(
                        "/{} is not a loadable ELF object, and the loader stops there",
                        f.path
                    )),
                    _ => None,
                },
                Err(Miss::Absent { dangling: None }) => None,
                Err(m) if m.is_broken() => Some(format!("{m}, and the loader stops there")),
                Err(m) => {
                    notes.push(m.to_string());
                    None
                }
            };
            if stop.is_some() {
                return Lookup {
                    found: None,
                    notes,
                    broken: stop,
                };
            }
        }
        Lookup {
            found: None,
            notes,
            broken: None,
        }
    }
}

fn not_found(path: &str, name: &str, groups: &[search::Group], notes: &[String]) -> String {
    let searched: Vec<String> = groups
        .iter()
        .map(|g| {
            let dirs: Vec<&str> = g.dirs.iter().map(|d| d.written.as_str()).collect();
            format!("{} {}", g.label, dirs.join(", "))
        })
        .collect();
    let mut msg = if name.contains('/') {
        format!("{path}: needs {name} (a path, not searched: not in the image")
    } else {
        format!("{path}: needs {name} (not found in {}", searched.join("; "))
    };
    for n in notes {
        msg.push_str("; ");
        msg.push_str(n);
    }
    msg.push(')');
    msg
}

#[cfg(test)]
mod tests;
