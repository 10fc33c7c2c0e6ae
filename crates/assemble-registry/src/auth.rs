//! Who we are to a registry: `ASSEMBLE_REGISTRY_TOKEN` (a bearer token, as
//! CI systems hand out), else `ASSEMBLE_REGISTRY_USER` with
//! `ASSEMBLE_REGISTRY_PASSWORD`, else the registry's entry in
//! `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` or the
//! docker config (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`),
//! else no one. Never printed.

use std::path::PathBuf;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

/// The credentials for `registry` (see the module doc).
pub(crate) fn credentials(registry: &str) -> RegistryAuth {
    if let Ok(token) = std::env::var("ASSEMBLE_REGISTRY_TOKEN") {
        return RegistryAuth::Bearer(token);
    }
    if let (Ok(user), Ok(password)) = (
        std::env::var("ASSEMBLE_REGISTRY_USER"),
        std::env::var("ASSEMBLE_REGISTRY_PASSWORD"),
    ) {
        return RegistryAuth::Basic(user, password);
    }
    auth_files()
        .iter()
        .find_map(|f| from_auth_file(f, registry))
        .unwrap_or(RegistryAuth::Anonymous)
}

fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")));
    files.extend(env("HOME").map(|h| h.join(".docker/config.json")));
    files
}

/// `auths.<registry>.auth` (base64 of `user:password`) in a docker or
/// containers auth file.
fn from_auth_file(file: &std::path::Path, registry: &str) -> Option<RegistryAuth> {
    let bytes = assemble_fs::files::read_named(file, 1 << 20).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let auths = json["auths"].as_object()?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.split('/').next() == Some(registry)
    })?;
    let encoded = entry.1["auth"].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auth_file_gives_the_registrys_entry() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("auth.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("me:s3cret");
        let text = format!(
            r#"{{"auths":{{"other:1":{{"auth":"eA=="}},"https://reg.example:5000":{{"auth":"{auth}"}}}}}}"#
        );
        fs_err::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        match from_auth_file(&file, "reg.example:5000") {
            Some(RegistryAuth::Basic(u, p)) => {
                assert_eq!((u.as_str(), p.as_str()), ("me", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        assert!(from_auth_file(&file, "nowhere").is_none());
    }
}
