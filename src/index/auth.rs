//! Registry credentials as docker and BuildKit read them (`$DOCKER_CONFIG/config.json`), and
//! the registry's `WWW-Authenticate` challenges. A [`Credential`] never prints its secret.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::reference::auth_key;

/// What the config gives for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or token used as one).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`), traded at the realm for an access token.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// `Basic <base64(user:password)>` for an Authorization header.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

#[derive(Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The credentials of `registry` (as written in a reference) in `<dir>/config.json`; `None`
/// when the file or an entry for the registry is absent (anonymous). A `credsStore` or
/// `credHelpers` entry for the registry is an error: no helper binary runs in the index Job.
/// Errors never quote the file's secrets.
pub fn credentials(dir: &Path, registry: &str) -> Result<Option<Credential>, String> {
    let path = dir.join("config.json");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    // serde_json's message holds a line and column, never the file's text.
    let config: ConfigFile = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a docker config.json: {e}", path.display()))?;
    lookup(&config, registry).map_err(|e| format!("{}: {e}", path.display()))
}

fn lookup(config: &ConfigFile, registry: &str) -> Result<Option<Credential>, String> {
    let wanted = auth_key(registry);
    if let Some(helper) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| auth_key(k) == wanted)
        .map(|(_, v)| v)
    {
        return Err(format!(
            "credHelpers names docker-credential-{helper} for {registry}: credential helpers are not supported in the index Job; put the registry's credentials under auths (a kubernetes.io/dockerconfigjson Secret)"
        ));
    }
    let entry = config.auths.iter().find(|(k, _)| auth_key(k) == wanted);
    let Some((key, entry)) = entry else {
        if let Some(store) = &config.creds_store {
            return Err(format!(
                "credsStore {store:?} holds the credentials and auths has no entry for {registry}: credential helpers are not supported in the index Job"
            ));
        }
        return Ok(None);
    };
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken(token.clone())));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| format!("auths[{key:?}].auth is not base64 of user:password"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("auths[{key:?}].auth is not base64 of user:password"))?;
        return Ok(Some(Credential::Basic {
            username: username.into(),
            password: password.into(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => Ok(Some(Credential::Basic {
            username: username.clone(),
            password: password.clone(),
        })),
        _ => Err(format!(
            "auths[{key:?}] has neither auth, username and password, nor identitytoken"
        )),
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=..,service=..,scope=..`
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// `Basic realm=..`
    Basic,
}

/// Parses a challenge; `None` for a scheme other than Bearer or Basic, or a Bearer without
/// a realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="value", key=value` pairs (quoted values may hold commas and `\"`).
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return params;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ConfigFile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn auths_by_host_with_docker_hub_aliases() {
        let c = config(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
                "127.0.0.1:5000":{"username":"ci","password":"s3cret"},
                "ghcr.io":{"identitytoken":"refresh"}}}"#,
        );
        let basic = |u: &str, p: &str| {
            Some(Credential::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        assert_eq!(lookup(&c, "docker.io").unwrap(), basic("u", "p"));
        assert_eq!(lookup(&c, "127.0.0.1:5000").unwrap(), basic("ci", "s3cret"));
        assert_eq!(
            lookup(&c, "ghcr.io").unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(lookup(&c, "quay.io").unwrap(), None);
        let debug = format!("{:?}", basic("ci", "s3cret").unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn helpers_are_refused_clearly() {
        let c = config(r#"{"credHelpers":{"r.io":"ecr-login"}}"#);
        assert!(lookup(&c, "r.io")
            .unwrap_err()
            .contains("credential helpers are not supported"));
        let c = config(r#"{"credsStore":"desktop","auths":{"q.io":{"auth":"dTpw"}}}"#);
        assert!(lookup(&c, "r.io").unwrap_err().contains("credsStore"));
        assert!(lookup(&c, "q.io").unwrap().is_some());
        let c = config(r#"{"auths":{"r.io":{"auth":"bm9jb2xvbg=="}}}"#);
        let err = lookup(&c, "r.io").unwrap_err();
        assert!(err.contains("not base64 of user:password") && !err.contains("bm9j"));
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.io/token".into(),
                service: Some("registry.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
