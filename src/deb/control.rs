//! deb822 paragraphs (`control` files, `apt-cache show` output), read by
//! hand: the format is "Field: value" lines with indented continuation lines
//! and blank lines between paragraphs, about twenty lines of code; a crate
//! would add a dependency for no less code at the call sites.

use anyhow::{Result, bail};

/// Fields of one paragraph in file order; a multi-line value keeps its
/// continuation lines (with their leading space) after a `\n`.
pub type Paragraph = Vec<(String, String)>;

/// Every paragraph of a deb822 text.
pub fn paragraphs(text: &str) -> Result<Vec<Paragraph>> {
    let mut out = Vec::new();
    let mut cur: Paragraph = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            let Some((_, value)) = cur.last_mut() else {
                bail!("line {}: a continuation line before any field", n + 1);
            };
            value.push('\n');
            value.push_str(line);
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.to_string(), v.trim().to_string()));
        } else {
            bail!("line {}: {line:?} is not \"Field: value\"", n + 1);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// The single paragraph of a `control` file.
pub fn parse_paragraph(text: &str) -> Result<Paragraph> {
    let mut ps = paragraphs(text)?;
    match ps.len() {
        1 => Ok(ps.remove(0)),
        n => bail!("expected one paragraph, found {n}"),
    }
}

/// A field's value (field names are case-insensitive in deb822).
pub fn get<'a>(p: &'a Paragraph, name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Package names of a `Depends`-style field: the first alternative of each
/// group (`a | b` takes `a`), without version constraints or `:any`.
pub fn first_alternatives(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|group| group.split('|').next())
        .map(|alt| {
            let name = alt.split(['(', '[', '<']).next().unwrap_or("").trim();
            name.split(':').next().unwrap_or("").to_string()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_keep_order_and_continuations() {
        let ps = paragraphs("Package: a\nDescription: x\n more\n .\n\nPackage: b\n").unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(get(&ps[0], "description"), Some("x\n more\n ."));
        assert_eq!(get(&ps[1], "Package"), Some("b"));
        assert!(paragraphs(" orphan\n").is_err());
    }

    #[test]
    fn depends_take_the_first_alternative() {
        assert_eq!(
            first_alternatives("libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0, libgcc-s1:any"),
            ["libc6", "debconf", "libgcc-s1"]
        );
        assert!(first_alternatives("").is_empty());
    }
}
