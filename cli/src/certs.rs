//! `fleetctl certs`: a development CA and the three kinds of certificate a
//! fleet uses, each with exactly one SPIFFE URI SAN (DESIGN §7).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use fleet_proto::identity::{Identity, check_label};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum Certs {
    /// Create a development CA (ca.pem, ca.key) for a trust domain.
    Init {
        /// Directory for the CA files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// SPIFFE trust domain, e.g. fleet.example.
        #[arg(long)]
        trust_domain: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate signed by the CA in --dir.
    Issue {
        /// Directory holding ca.pem and ca.key; the certificate is written there.
        #[arg(long, default_value = ".", global = true)]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365, global = true)]
        days: u32,
        #[command(subcommand)]
        kind: Kind,
    },
}

#[derive(Debug, Subcommand)]
pub enum Kind {
    /// For a fleet-hostd: spiffe://TD/tenant/T/host/H (client auth).
    Host {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        host: String,
    },
    /// For a person or automation: spiffe://TD/operator/NAME (client auth).
    Operator {
        #[arg(long)]
        name: String,
    },
    /// For fleet-aggregator: spiffe://TD/aggregator plus DNS and IP SANs.
    Aggregator {
        /// DNS names clients dial (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses clients dial (repeatable).
        #[arg(long = "ip")]
        ip: Vec<std::net::IpAddr>,
    },
}

fn err(e: rcgen::Error) -> Failure {
    Failure::Other(format!("certificate: {e}"))
}

/// Writes a file readable by its owner only when `secret`.
pub fn write(path: &Path, data: &str, secret: bool) -> Result<(), Failure> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Failure::Other(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(data.as_bytes())?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
}

pub fn run(c: Certs) -> Result<(), Failure> {
    match c {
        Certs::Init {
            dir,
            trust_domain,
            days,
            force,
        } => init(&dir, &trust_domain, days, force).map(|m| println!("{m}")),
        Certs::Issue { dir, days, kind } => issue(&dir, days, kind),
    }
}

pub fn init(dir: &Path, td: &str, days: u32, force: bool) -> Result<String, Failure> {
    if !check_label(td) {
        return Err(Failure::Usage(format!(
            "trust domain {td:?} is not allowed"
        )));
    }
    std::fs::create_dir_all(dir)?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() && !force {
        return Err(Failure::Other(format!(
            "{} exists; pass --force to replace the CA (every certificate it issued stops working)",
            cert_path.display()
        )));
    }
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, format!("fleet development CA ({td})"));
    params.subject_alt_names = vec![SanType::URI(
        format!("spiffe://{td}").try_into().map_err(err)?,
    )];
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(err)?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok(format!(
        "created CA for trust domain {td}: {} and {} (keep the key secret)",
        cert_path.display(),
        key_path.display()
    ))
}

/// The trust domain a CA certificate names in its `spiffe://TD` URI SAN.
pub fn trust_domain_of(ca_pem: &str) -> Result<String, Failure> {
    use x509_parser::extensions::GeneralName;
    let bad = |why: &str| Failure::Other(format!("ca.pem: {why}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|_| bad("not a PEM certificate"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| bad("not an X.509 certificate"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| bad("bad subjectAltName"))?
        .ok_or_else(|| bad("no subjectAltName"))?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(u) => u
                .strip_prefix("spiffe://")
                .filter(|td| check_label(td))
                .map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| bad("carries no spiffe:// trust domain"))
}

/// A loaded CA that can sign certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub trust_domain: String,
}

/// One signed certificate, in memory.
pub struct Issued {
    pub identity: Identity,
    /// File stem: `host-T-H`, `operator-N` or `aggregator`.
    pub file: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// Reads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, Failure> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|e| {
                Failure::Other(format!(
                    "cannot read {}: {e} (run `fleetctl certs init --dir {}` first)",
                    p.display(),
                    dir.display()
                ))
            })
        };
        let ca_pem = read(dir.join("ca.pem"))?;
        let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?).map_err(err)?;
        let trust_domain = trust_domain_of(&ca_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(err)?;
        Ok(Self {
            issuer,
            trust_domain,
        })
    }

    /// Signs a new key for `kind`, valid for `days`.
    pub fn issue(&self, kind: Kind, days: u32) -> Result<Issued, Failure> {
        let td = self.trust_domain.clone();
        let issuer = &self.issuer;
        let check = |what: &str, v: &str| {
            if check_label(v) {
                Ok(v.to_owned())
            } else {
                Err(Failure::Usage(format!("{what} {v:?} is not allowed")))
            }
        };
        let (identity, file, usages, extra): (
            Identity,
            String,
            Vec<ExtendedKeyUsagePurpose>,
            Vec<SanType>,
        ) = match kind {
            Kind::Host { tenant, host } => {
                let (t, h) = (check("tenant", &tenant)?, check("host", &host)?);
                (
                    Identity::Host {
                        trust_domain: td.clone(),
                        tenant: t.clone(),
                        host: h.clone(),
                    },
                    format!("host-{t}-{h}"),
                    vec![ExtendedKeyUsagePurpose::ClientAuth],
                    vec![],
                )
            }
            Kind::Operator { name } => {
                let n = check("operator name", &name)?;
                (
                    Identity::Operator {
                        trust_domain: td.clone(),
                        name: n.clone(),
                    },
                    format!("operator-{n}"),
                    vec![ExtendedKeyUsagePurpose::ClientAuth],
                    vec![],
                )
            }
            Kind::Aggregator { dns, ip } => {
                let mut extra = Vec::new();
                for d in &dns {
                    extra.push(SanType::DnsName(
                        check("DNS name", d)?.try_into().map_err(err)?,
                    ));
                }
                extra.extend(ip.into_iter().map(SanType::IpAddress));
                (
                    Identity::Aggregator {
                        trust_domain: td.clone(),
                    },
                    "aggregator".to_owned(),
                    vec![
                        ExtendedKeyUsagePurpose::ServerAuth,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    ],
                    extra,
                )
            }
        };
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.uri());
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into().map_err(err)?)];
        params.subject_alt_names.extend(extra);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days);
        let cert = params.signed_by(&key, issuer).map_err(err)?;
        Ok(Issued {
            identity,
            file,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn issue(dir: &Path, days: u32, kind: Kind) -> Result<(), Failure> {
    let i = Ca::load(dir)?.issue(kind, days)?;
    let (cert_path, key_path) = (
        dir.join(format!("{}.pem", i.file)),
        dir.join(format!("{}.key", i.file)),
    );
    write(&key_path, &i.key_pem, true)?;
    write(&cert_path, &i.cert_pem, false)?;
    println!(
        "issued {}: {} and {}",
        i.identity,
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}
