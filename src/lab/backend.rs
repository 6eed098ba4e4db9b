//! `geolb lab backend`: the lab's HTTP backend. `GET /healthz` answers
//! `ok`; anything else answers who served it and what the backend saw of
//! the client (its TCP peer — the tier —, `X-Forwarded-For`, the request
//! id), so a `curl` through a VIP shows which region and backend answered.
//! HTTP/1.1 with keep-alive (the tier pools its connections), at most
//! [`MAX_CONNECTIONS`] at once; it ends on SIGTERM, like any process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// The answer to one request.
pub fn respond<B>(req: &Request<B>, name: &str, peer: SocketAddr) -> Response<Full<Bytes>> {
    let body = if req.uri().path() == "/healthz" {
        "ok\n".to_string()
    } else {
        let header = |h: &str| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!(
            "backend {name}\n{} {}\npeer {peer}\nx-forwarded-for {}\nx-request-id {}\n",
            req.method(),
            req.uri(),
            header("x-forwarded-for"),
            header("x-request-id"),
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Serves `listen` until the process ends.
pub async fn serve(listen: SocketAddr, name: String) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, %name, "lab backend listening");
    let name: Arc<str> = Arc::from(name);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = respond(&req, &name, peer);
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(r: Response<Full<Bytes>>) -> String {
        let b = r.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[tokio::test]
    async fn the_backend_names_itself_and_what_it_saw_and_answers_health_checks_with_ok() {
        let peer: SocketAddr = "127.0.2.10:40000".parse().expect("addr");
        let req = Request::builder()
            .uri("/api?x=1")
            .header("x-forwarded-for", "127.0.0.1")
            .body(())
            .expect("request");
        let body = text(respond(&req, "us-app/127.0.2.11:8080", peer)).await;
        assert_eq!(
            body,
            "backend us-app/127.0.2.11:8080\nGET /api?x=1\npeer 127.0.2.10:40000\nx-forwarded-for 127.0.0.1\nx-request-id -\n"
        );
        let health = Request::builder()
            .uri("/healthz")
            .body(())
            .expect("request");
        assert_eq!(text(respond(&health, "n", peer)).await, "ok\n");
    }
}
