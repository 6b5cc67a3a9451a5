//! TLS for the signaling WebSocket (`wss://`): rustls with the `ring` provider, verifying the
//! server against the platform's trust store (`rustls-platform-verifier`: the system roots
//! through webpki on Linux, the OS verifier on macOS and Windows) plus, optionally, the CA
//! certificates of a PEM file the user gives (`--ca-cert`, the app's `ca_cert` setting).
//!
//! Also here: what a failed handshake means for the user ([`certificate_problem`]), since an
//! untrusted certificate is not worth retrying.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig};

/// A CA certificate file that cannot be used. The messages are meant for users.
#[derive(Debug, thiserror::Error)]
pub enum CaCertError {
    /// The file cannot be read (missing, a directory, no permission).
    #[error("cannot read the CA certificate file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `-----BEGIN CERTIFICATE-----` block is broken (bad base64, no end line).
    #[error("the CA certificate file {} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// No certificate in the file at all (not PEM, or only a key).
    #[error(
        "the CA certificate file {} holds no certificate: expected PEM (-----BEGIN CERTIFICATE----- blocks)",
        path.display()
    )]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the file cannot be parsed as one.
    #[error("certificate {index} in the CA certificate file {} is not usable: {reason}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Position in the file, from 1.
        index: usize,
        /// What rustls said.
        reason: String,
    },
}

/// TLS could not be set up for a client.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The extra CA file is unusable.
    #[error(transparent)]
    CaCert(#[from] CaCertError),
    /// The platform verifier could not be built (e.g. no trusted root certificates at all).
    #[error("cannot load the system's trusted certificates: {0}")]
    Platform(rustls::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(rustls::Error),
}

/// Reads the certificates of the PEM file at `path`; each is checked to be usable as a trust
/// anchor. Other PEM blocks (keys) are skipped; a file without any certificate is an error.
pub fn load_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaCertError> {
    let bytes = std::fs::read(path).map_err(|source| CaCertError::Read { path: path.to_path_buf(), source })?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|e| CaCertError::BadPem { path: path.to_path_buf(), reason: e.to_string() })?;
        let mut check = rustls::RootCertStore::empty();
        check.add(cert.clone()).map_err(|e| CaCertError::Unusable {
            path: path.to_path_buf(),
            index: certs.len() + 1,
            reason: e.to_string(),
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(CaCertError::NoCertificates { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// A client configuration that trusts the platform's roots and, with `ca_cert`, the
/// certificates of that PEM file too. Reads files (the system's roots on Linux): call it off
/// the async threads and once per client, not per connection.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let extra = match ca_cert {
        Some(path) => load_ca_certs(path)?,
        None => Vec::new(),
    };
    let extra_count = extra.len();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
        .map_err(TlsSetupError::Platform)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tracing::debug!(extra_ca_certs = extra_count, "TLS client configuration ready");
    Ok(Arc::new(config))
}

/// If `err` (from a WebSocket connection attempt) is the server's certificate failing
/// verification, a description for users; `None` for anything else.
pub fn certificate_problem(err: &tokio_tungstenite::tungstenite::Error) -> Option<String> {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::TlsError;
    let tls = match err {
        // tokio-rustls reports handshake failures as I/O errors wrapping the rustls error.
        Error::Io(io) => io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Error::Tls(TlsError::Rustls(e)) => Some(&**e),
        _ => None,
    }?;
    match tls {
        rustls::Error::InvalidCertificate(c) => Some(describe(c, tls)),
        _ => None,
    }
}

fn describe(c: &CertificateError, full: &rustls::Error) -> String {
    let why = match c {
        CertificateError::UnknownIssuer => {
            "it is not signed by an authority this computer trusts (for a server with its own CA, \
             give that CA's certificate as the CA certificate file)"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it was issued for another host name"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (is this computer's clock right?)"
        }
        CertificateError::Revoked => "it has been revoked",
        CertificateError::BadSignature => "its signature is invalid",
        CertificateError::BadEncoding => "it is malformed",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not meant for a server (extended key usage)"
        }
        CertificateError::Other(other)
            if matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity)) =>
        {
            // `openssl req -x509` makes such certificates by default.
            "the server presents a CA certificate (basicConstraints CA:TRUE) as its own, which is \
             never accepted: give the server a certificate signed by that CA, or a self-signed one \
             with CA:FALSE"
        }
        _ => "it was refused",
    };
    format!("{why} ({full})")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_missing_ca_file_names_the_file_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.pem");
        let err = load_ca_certs(&path).unwrap_err();
        assert!(matches!(err, CaCertError::Read { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("cannot read the CA certificate file") && msg.contains("nope.pem"), "{msg}");
        // The same error stops a client configuration from being built.
        let err = client_config(Some(&path)).unwrap_err();
        assert!(matches!(err, TlsSetupError::CaCert(CaCertError::Read { .. })), "{err:?}");
    }

    #[test]
    fn a_directory_is_not_a_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_ca_certs(dir.path()).unwrap_err();
        assert!(matches!(err, CaCertError::Read { .. }), "{err:?}");
    }

    #[test]
    fn a_file_that_is_not_pem_holds_no_certificate() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("text.pem", &b"not a certificate\n"[..]),
            ("empty.pem", b""),
            ("binary.der", b"\x30\x82\x01\x0a\x02\x82\x01\x01\x00\xff\xfe"),
        ] {
            let path = write(&dir, name, content);
            let err = load_ca_certs(&path).unwrap_err();
            assert!(matches!(err, CaCertError::NoCertificates { .. }), "{name}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains("BEGIN CERTIFICATE"), "{msg}");
        }
    }

    #[test]
    fn a_key_alone_is_no_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let path = write(&dir, "key.pem", key.serialize_pem().as_bytes());
        assert!(matches!(load_ca_certs(&path), Err(CaCertError::NoCertificates { .. })));
    }

    #[test]
    fn broken_pem_and_garbage_certificates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let unterminated = write(&dir, "cut.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n");
        let err = load_ca_certs(&unterminated).unwrap_err();
        assert!(matches!(err, CaCertError::BadPem { .. }), "{err:?}");
        assert!(err.to_string().contains("not valid PEM"), "{err}");

        // Valid base64 in a certificate block, but not a certificate.
        let garbage =
            write(&dir, "garbage.pem", b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n");
        let err = load_ca_certs(&garbage).unwrap_err();
        assert!(matches!(err, CaCertError::Unusable { index: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("certificate 1 in the CA certificate file"), "{err}");
    }

    #[test]
    fn good_ca_files_load_every_certificate_and_build_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let two = format!("# our CAs\n{}\n{}", ca_pem(), ca_pem());
        let path = write(&dir, "cas.pem", two.as_bytes());
        assert_eq!(load_ca_certs(&path).unwrap().len(), 2);
        let cfg = client_config(Some(&path)).unwrap();
        assert!(cfg.alpn_protocols.is_empty());
    }

    #[test]
    fn only_certificate_errors_count_as_certificate_problems() {
        use tokio_tungstenite::tungstenite::Error;
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
        let text = certificate_problem(&Error::Io(io)).unwrap();
        assert!(text.contains("not signed by an authority this computer trusts"), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");

        let ca_as_server = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(webpki::Error::CaUsedAsEndEntity),
        )));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, ca_as_server);
        let text = certificate_problem(&Error::Io(io)).unwrap();
        assert!(text.contains("presents a CA certificate"), "{text}");

        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(certificate_problem(&Error::Io(other)), None);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_problem(&Error::Io(refused)), None);
    }
}
