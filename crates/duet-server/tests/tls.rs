//! The server speaks `wss://` and `https://` itself when given a certificate and key.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use duet_proto::*;
use duet_server::ServerConfig;
use duet_server::config::TlsFiles;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A certificate and key in a directory of their own (tests run in parallel), removed when
/// dropped.
struct Certs {
    _dir: tempfile::TempDir,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn make_certs() -> (Certs, TlsFiles) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::Builder::new().prefix("duet-tls-").tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (Certs { _dir: dir, der: ck.cert.der().clone() }, TlsFiles { cert, key })
}

fn connector(certs: &Certs) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn wss_and_https_work_with_a_certificate() {
    let (certs, files) = make_certs();
    let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), tls: Some(files), ..ServerConfig::default() };
    let server = TestServer::from_config(cfg).await;
    assert!(server.url.starts_with("wss://"));
    let name = ServerName::try_from("localhost").unwrap();

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = connector(&certs).connect(name.clone(), tcp).await.expect("TLS handshake");
    let (status, body) = http_get(tls, "localhost", "/health").await;
    assert_eq!(status, 200, "{body}");

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = connector(&certs).connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("wss upgrade");
    let hello = ClientFrame::new(ClientMessage::Hello { version: 1, resume_token: None, client: None });
    ws.send(Message::text(hello.to_json())).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    let frame = parse_server_frame(reply.to_text().unwrap()).unwrap();
    assert_eq!(frame.msg.kind(), "welcome");
}

#[tokio::test]
async fn plain_clients_get_no_answer_from_a_tls_port() {
    let (_certs, files) = make_certs();
    let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), tls: Some(files), ..ServerConfig::default() };
    let server = TestServer::from_config(cfg).await;
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 0, "no plaintext HTTP on a TLS listener");
}

#[tokio::test]
async fn unusable_certificate_files_are_a_clear_startup_error() {
    let dir = std::env::temp_dir().join(format!("duet-badtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles { cert: junk.clone(), key: junk }),
        ..ServerConfig::default()
    };
    let err = duet_server::Server::bind(cfg).await.err().expect("refused").to_string();
    assert!(err.contains("TLS") && err.contains("junk.pem"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
