//! A throw-away certificate authority for tests.
//!
//! Every [`TestCa`] generates its own EC P-256 CA and a server certificate signed by it, valid from
//! yesterday for a year (so clock skew between the test and a Go program never matters). The PEM
//! files live in a temporary directory owned by the `TestCa`:
//!
//! * `ca.pem` — pass it to the program under test as `SSL_CERT_FILE=<ca.pem>`, or to a curl
//!   client with `easy.cainfo(ca.ca_pem_path())`;
//! * `server.pem` / `server.key` — for out-of-process servers such as `docker-registry`.
//!
//! In-process servers use [`TestCa::acceptor`].

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};

/// The addresses every server certificate is valid for, besides the extra names a test asks for.
const LOOPBACK_IPS: [&str; 2] = ["127.0.0.1", "::1"];
const LOOPBACK_NAME: &str = "localhost";

/// A certificate and the private key that goes with it, both signed by / belonging to a [`TestCa`].
pub struct IssuedCert {
    /// The certificate, signed by the CA.
    pub cert: X509,
    /// Its EC P-256 private key.
    pub key: PKey<Private>,
}

/// A fresh CA plus one server certificate for `127.0.0.1`, `::1`, `localhost` (and extra DNS
/// names), written as PEM files into a temporary directory that lives as long as the `TestCa`.
pub struct TestCa {
    dir: tempfile::TempDir,
    ca: IssuedCert,
    server: IssuedCert,
}

impl TestCa {
    /// A new CA and a server certificate for the loopback addresses and `localhost`.
    pub fn new() -> TestCa {
        TestCa::with_names(&[])
    }

    /// Like [`TestCa::new`], with `names` added to the server certificate as DNS SANs
    /// (e.g. `"registry.test"`).
    pub fn with_names(names: &[&str]) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("test-ca.")
            .tempdir()
            .expect("create the temporary directory of a TestCa");
        let ca = make_ca();
        let server = issue(&ca, names);
        let ca_pem = ca.cert.to_pem().expect("encode CA certificate");
        let server_pem = server.cert.to_pem().expect("encode server certificate");
        let server_key = server
            .key
            .private_key_to_pem_pkcs8()
            .expect("encode server key");
        fs::write(dir.path().join("ca.pem"), ca_pem).expect("write ca.pem");
        fs::write(dir.path().join("server.pem"), server_pem).expect("write server.pem");
        fs::write(dir.path().join("server.key"), server_key).expect("write server.key");
        TestCa { dir, ca, server }
    }

    /// The temporary directory holding the PEM files (removed when the `TestCa` is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the CA certificate (`ca.pem`): what clients trust.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Path of the server certificate (`server.pem`, the leaf only).
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// Path of the server's private key (`server.key`, PKCS#8 PEM).
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> &X509 {
        &self.ca.cert
    }

    /// The server certificate and key written to `server.pem` / `server.key`.
    pub fn server(&self) -> &IssuedCert {
        &self.server
    }

    /// A TLS acceptor presenting the server certificate, for in-process HTTPS servers.
    pub fn acceptor(&self) -> SslAcceptor {
        acceptor_for(&self.server)
    }

    /// Sign a further certificate (new key) for the loopback addresses plus `names`: for a second
    /// TLS server under the same CA, or as a JWT signing certificate.
    pub fn sign_server_cert_for(&self, names: &[&str]) -> IssuedCert {
        issue(&self.ca, names)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// A TLS acceptor presenting `cert`, e.g. one made by [`TestCa::sign_server_cert_for`].
pub fn acceptor_for(cert: &IssuedCert) -> SslAcceptor {
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("create TLS acceptor");
    builder.set_private_key(&cert.key).expect("set TLS key");
    builder
        .set_certificate(&cert.cert)
        .expect("set TLS certificate");
    builder
        .check_private_key()
        .expect("TLS key matches certificate");
    builder.build()
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
    let ec = EcKey::generate(&group).expect("generate EC key");
    PKey::from_ec_key(ec).expect("wrap EC key")
}

fn name(common_name: &str) -> X509Name {
    let mut name = X509Name::builder().expect("X509 name builder");
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "systemd-import tests")
        .expect("set O");
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .expect("set CN");
    name.build()
}

/// A builder with version, a random positive serial and the validity window filled in.
fn cert_builder(subject: &X509Name, key: &PKey<Private>) -> openssl::x509::X509Builder {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    const DAY: i64 = 24 * 60 * 60;
    let mut serial = BigNum::new().expect("bignum");
    // 63 random bits with the top bit clear: positive, as Go's x509 parser wants.
    serial
        .rand(63, MsbOption::MAYBE_ZERO, false)
        .expect("random serial");
    let mut b = X509::builder().expect("X509 builder");
    b.set_version(2).expect("set version");
    b.set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("set serial");
    b.set_subject_name(subject).expect("set subject");
    b.set_pubkey(key).expect("set public key");
    b.set_not_before(&Asn1Time::from_unix(now - DAY).expect("time"))
        .expect("set notBefore");
    b.set_not_after(&Asn1Time::from_unix(now + 365 * DAY).expect("time"))
        .expect("set notAfter");
    b
}

fn make_ca() -> IssuedCert {
    let key = new_key();
    let subject = name("systemd-import test CA");
    let mut b = cert_builder(&subject, &key);
    b.set_issuer_name(&subject).expect("set issuer");
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .expect("basicConstraints"),
    )
    .expect("add basicConstraints");
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .expect("keyUsage"),
    )
    .expect("add keyUsage");
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(None, None))
        .expect("subjectKeyIdentifier");
    b.append_extension(ski).expect("add subjectKeyIdentifier");
    b.sign(&key, MessageDigest::sha256()).expect("self-sign CA");
    IssuedCert {
        cert: b.build(),
        key,
    }
}

fn issue(ca: &IssuedCert, names: &[&str]) -> IssuedCert {
    let key = new_key();
    let mut b = cert_builder(&name(names.first().copied().unwrap_or(LOOPBACK_NAME)), &key);
    b.set_issuer_name(ca.cert.subject_name())
        .expect("set issuer");
    b.append_extension(BasicConstraints::new().build().expect("basicConstraints"))
        .expect("add basicConstraints");
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_agreement()
            .build()
            .expect("keyUsage"),
    )
    .expect("add keyUsage");
    b.append_extension(
        ExtendedKeyUsage::new()
            .server_auth()
            .client_auth()
            .build()
            .expect("extendedKeyUsage"),
    )
    .expect("add extendedKeyUsage");
    let mut san = SubjectAlternativeName::new();
    for ip in LOOPBACK_IPS {
        san.ip(ip);
    }
    san.dns(LOOPBACK_NAME);
    for n in names {
        san.dns(n);
    }
    let ctx = b.x509v3_context(Some(&ca.cert), None);
    let san = san.build(&ctx).expect("subjectAltName");
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&ctx)
        .expect("authorityKeyIdentifier");
    b.append_extension(san).expect("add subjectAltName");
    b.append_extension(aki).expect("add authorityKeyIdentifier");
    b.sign(&ca.key, MessageDigest::sha256())
        .expect("sign server certificate");
    IssuedCert {
        cert: b.build(),
        key,
    }
}
