//! `[image.permissions]`: the setuid/setgid and world-writable entries the
//! image may keep, each by path with a reason. Everything else is held to
//! the policy at assemble time (see `rootfs::permissions`).

use super::{Ctx, SpecError, image_path};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Default)]
pub struct Permissions {
    /// Files that keep their setuid/setgid bits.
    pub setid: Vec<Allowed>,
    /// Paths that stay writable by others (besides `/tmp`, 1777).
    pub world_writable: Vec<Allowed>,
}

/// One exception: an image path (relative, as in tar entries) and why.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub path: String,
    pub reason: String,
    /// Where the spec declares it, for errors.
    pub line: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPermissions {
    #[serde(default)]
    setid: Vec<RawAllowed>,
    #[serde(default)]
    world_writable: Vec<RawAllowed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowed {
    path: Spanned<String>,
    reason: Option<String>,
}

pub(super) fn permissions(ctx: &Ctx, raw: RawPermissions) -> Result<Permissions, SpecError> {
    Ok(Permissions {
        setid: allowed(ctx, raw.setid, "image.permissions.setid")?,
        world_writable: allowed(ctx, raw.world_writable, "image.permissions.world_writable")?,
    })
}

fn allowed(ctx: &Ctx, raw: Vec<RawAllowed>, field: &str) -> Result<Vec<Allowed>, SpecError> {
    let mut out: Vec<Allowed> = Vec::new();
    for a in raw {
        let span = a.path.span();
        let path = image_path(a.path.get_ref()).or_else(|m| ctx.err(span.clone(), field, m))?;
        let what = format!("{field} {:?}", a.path.get_ref());
        let reason = a.reason.unwrap_or_default();
        if reason.trim().is_empty() {
            return ctx.err(
                span,
                &what,
                "needs a non-empty `reason` saying why the image keeps this exception",
            );
        }
        if out.iter().any(|o| o.path == path) {
            return ctx.err(span, &what, "is listed twice");
        }
        out.push(Allowed {
            path,
            reason,
            line: ctx.line_of(span.start),
        });
    }
    Ok(out)
}
