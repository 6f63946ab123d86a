//! The index Job's way through an HTTP proxy, from the same `HTTPS_PROXY`, `HTTP_PROXY` and
//! `NO_PROXY` (either case) that builder pods get: an https registry through a CONNECT
//! tunnel, a plain-HTTP one by sending its requests to the proxy in absolute form, as Go's
//! HTTP client (and so buildkitd) does. The rules are curl's, through `hyper-util`'s matcher.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The proxy environment, read once.
#[derive(Clone)]
pub struct Proxies {
    matcher: Arc<Matcher>,
}

/// No proxy: everything direct.
impl Default for Proxies {
    fn default() -> Proxies {
        Proxies {
            matcher: Arc::new(Matcher::builder().build()),
        }
    }
}

/// Never the proxy URLs, which may hold credentials.
impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proxies")
    }
}

impl Proxies {
    /// The proxies of this process's environment. A proxy that is not `http://` is refused
    /// (the tunnel to it would be plain TCP), naming the variable.
    pub fn from_env() -> Result<Proxies, String> {
        for name in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            if let Ok(value) = std::env::var(name) {
                let value = value.trim();
                if !value.is_empty() && value.contains("://") && !value.starts_with("http://") {
                    let scheme = value.split("://").next().unwrap_or_default();
                    return Err(format!(
                        "{name}: a {scheme}:// proxy is not supported; expected http://HOST:PORT"
                    ));
                }
            }
        }
        Ok(Proxies {
            matcher: Arc::new(Matcher::from_env()),
        })
    }

    /// The proxy for `url` (none when `NO_PROXY` covers its host or no variable is set), and
    /// its `Proxy-Authorization` from the proxy URL's user info.
    pub fn for_url(&self, url: &Uri) -> Option<(Uri, Option<HeaderValue>)> {
        self.matcher
            .intercept(url)
            .map(|i| (i.uri().clone(), i.basic_auth().cloned()))
    }
}

/// A connector that goes direct, through a CONNECT tunnel (https) or to the proxy itself
/// (http, the connection marked proxied so requests go in absolute form).
#[derive(Clone)]
pub struct ProxyConnector {
    direct: HttpConnector,
    proxies: Proxies,
}

impl ProxyConnector {
    /// Over `direct` (which must allow non-http schemes: the TLS layer sits above).
    pub fn new(direct: HttpConnector, proxies: Proxies) -> ProxyConnector {
        ProxyConnector { direct, proxies }
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut direct = self.direct.clone();
        let proxy = self.proxies.for_url(&dst);
        Box::pin(async move {
            match proxy {
                None => Ok(Stream {
                    io: direct.call(dst).await?,
                    forward: false,
                }),
                Some((proxy, auth)) if dst.scheme_str() == Some("https") => {
                    let mut tunnel = Tunnel::new(proxy.clone(), direct);
                    if let Some(auth) = auth {
                        tunnel = tunnel.with_auth(auth);
                    }
                    let io = tunnel
                        .call(dst)
                        .await
                        .map_err(|e| format!("proxy {}: {e:?}", without_userinfo(&proxy)))?;
                    Ok(Stream { io, forward: false })
                }
                Some((proxy, _)) => Ok(Stream {
                    io: direct.call(proxy).await?,
                    forward: true,
                }),
            }
        })
    }
}

/// A proxy URL for messages: scheme, host and port, never its credentials.
pub fn without_userinfo(proxy: &Uri) -> String {
    format!(
        "{}://{}{}",
        proxy.scheme_str().unwrap_or("http"),
        proxy.host().unwrap_or_default(),
        proxy.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// A TCP connection, to the registry (perhaps tunnelled) or to a forwarding proxy.
pub struct Stream {
    io: TokioIo<TcpStream>,
    forward: bool,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.forward)
    }
}

impl Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(https: &str, http: &str, no: &str) -> Proxies {
        let matcher = Matcher::builder().https(https).http(http).no(no).build();
        Proxies {
            matcher: Arc::new(matcher),
        }
    }

    #[test]
    fn no_proxy_hosts_go_direct_and_others_through_their_schemes_proxy() {
        let p = proxies(
            "http://user:secret@proxy.corp:3128",
            "http://plain.corp:8080",
            "registry.svc,.cluster.local,10.0.0.0/8",
        );
        let via = |url: &str| {
            p.for_url(&url.parse().unwrap())
                .map(|(u, a)| (without_userinfo(&u), a.is_some()))
        };
        assert_eq!(
            via("https://ghcr.io/v2/"),
            Some(("http://proxy.corp:3128".into(), true))
        );
        assert_eq!(
            via("http://mirror.example:5000/v2/"),
            Some(("http://plain.corp:8080".into(), false))
        );
        assert_eq!(via("https://registry.svc/v2/"), None);
        assert_eq!(via("http://zot.hearth.svc.cluster.local:5000/v2/"), None);
        assert_eq!(via("https://10.1.2.3:5000/v2/"), None);
    }
}
