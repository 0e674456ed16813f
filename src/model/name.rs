//! Image names as Docker and containerd spell them.

/// `name:tag` as containerd and registries spell it in full
/// (`mariadb-pageserver` -> `docker.io/library/mariadb-pageserver:latest`).
pub fn full_name(name: &str, tag: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, name.contains('/')) {
        (true, _) => format!("{name}:{tag}"),
        (false, true) => format!("docker.io/{name}:{tag}"),
        (false, false) => format!("docker.io/library/{name}:{tag}"),
    }
}

/// The short form Docker shows (`docker.io/library/x:t` -> `x:t`).
pub fn familiar_name(full: &str) -> String {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_like_docker() {
        assert_eq!(
            full_name("mariadb-pageserver", "latest"),
            "docker.io/library/mariadb-pageserver:latest"
        );
        assert_eq!(full_name("acme/db", "1"), "docker.io/acme/db:1");
        assert_eq!(full_name("localhost:5000/db", "1"), "localhost:5000/db:1");
        assert_eq!(full_name("ghcr.io/acme/db", "1"), "ghcr.io/acme/db:1");
        assert_eq!(familiar_name("docker.io/library/db:1"), "db:1");
        assert_eq!(familiar_name("localhost:5000/db:1"), "localhost:5000/db:1");
    }
}
