//! A docker `config.json` with fresh registry logins merged over a base one (the push
//! Secret's), and its safe writing: mode 0600, whole or not at all. Errors never quote the
//! file's content.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::{Map, Value};

/// A login for one registry host. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The registry host, as the `auths` key.
    pub host: String,
    /// The user name (`AWS` for ECR, `oauth2accesstoken` for Google).
    pub username: String,
    /// The short-lived token.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, {}, <redacted>)", self.host, self.username)
    }
}

/// `base` (a config.json's text; `None`: none) with an `auths` entry for each login, which
/// replaces any entry of the base for that host, and without the base's `credHelpers` entry
/// for it (no helper binary runs where this config is read). Everything else of the base
/// (other hosts' entries, other keys) is kept.
pub fn merge(base: Option<&[u8]>, logins: &[Login]) -> Result<Vec<u8>, String> {
    let mut config = match base {
        None => Map::new(),
        Some(text) => match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(map)) => map,
            // serde_json's message holds a line and column, never the text.
            Err(e) => return Err(format!("not a docker config.json: {e}")),
            Ok(_) => return Err("not a docker config.json: expected a JSON object".into()),
        },
    };
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err("not a docker config.json: auths is not an object".into());
    };
    for login in logins {
        // Any spelling of the same host (`https://host`, `host/`) would be read first or
        // instead: one entry per host.
        auths.retain(|key, _| !same_host(key, &login.host));
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", login.username, login.password));
        let mut entry = Map::new();
        entry.insert("auth".into(), Value::String(auth));
        auths.insert(login.host.clone(), Value::Object(entry));
    }
    if let Some(Value::Object(helpers)) = config.get_mut("credHelpers") {
        helpers.retain(|key, _| !logins.iter().any(|l| same_host(key, &l.host)));
    }
    let mut text = serde_json::to_vec_pretty(&Value::Object(config))
        .map_err(|e| format!("encoding config.json: {e}"))?;
    text.push(b'\n');
    Ok(text)
}

/// Whether an `auths`/`credHelpers` key names `host` (keys may carry a scheme or a path, as
/// docker writes them).
fn same_host(key: &str, host: &str) -> bool {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.split('/').next().unwrap_or(key);
    key.eq_ignore_ascii_case(host)
}

/// Writes `content` as `<dir>/config.json`, mode 0600, through a temporary file renamed into
/// place: a reader never sees half a file, and a failure leaves no file.
pub fn write(dir: &Path, content: &[u8]) -> Result<(), String> {
    let mut file = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(dir)
        .map_err(|e| format!("creating a file in {}: {e}", dir.display()))?;
    // tempfile creates it 0600 already; say so rather than rely on it.
    use std::os::unix::fs::PermissionsExt as _;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(content))
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| format!("writing {}: {e}", file.path().display()))?;
    let target = dir.join("config.json");
    file.persist(&target)
        .map_err(|e| format!("writing {}: {}", target.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(host: &str, password: &str) -> Login {
        Login {
            host: host.into(),
            username: "AWS".into(),
            password: password.into(),
        }
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn logins_replace_their_hosts_and_keep_the_rest() {
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
        let base = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"Z2g6cA=="}},"https://{ecr}/v2/":{{"auth":"b2xkOm9sZA=="}}}},
               "credHelpers":{{"{ecr}":"ecr-login","gcr.io":"gcr"}},"proxies":{{"x":1}}}}"#
        );
        let merged = parse(&merge(Some(base.as_bytes()), &[login(ecr, "tok")]).unwrap());
        assert_eq!(
            merged,
            serde_json::json!({
                "auths": {
                    "ghcr.io": {"auth": "Z2g6cA=="},
                    ecr: {"auth": "QVdTOnRvaw=="},
                },
                "credHelpers": {"gcr.io": "gcr"},
                "proxies": {"x": 1},
            })
        );
    }

    #[test]
    fn no_base_and_bad_bases() {
        let merged = parse(&merge(None, &[login("gcr.io", "t")]).unwrap());
        assert_eq!(
            merged,
            serde_json::json!({"auths": {"gcr.io": {"auth": "QVdTOnQ="}}})
        );
        let err = merge(Some(b"{\"auths\": {\"h\": \"s3cret"), &[]).unwrap_err();
        assert!(err.contains("not a docker config.json") && !err.contains("s3cret"));
        assert!(merge(Some(b"[]"), &[]).is_err());
        assert!(merge(Some(br#"{"auths":"x"}"#), &[]).is_err());
        assert!(!format!("{:?}", login("h", "s3cret")).contains("s3cret"));
    }

    #[test]
    fn written_whole_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), b"{}\n").unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
