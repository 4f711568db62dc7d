//! Running on Fly.io.
//!
//! The platform tells each machine its app, id, region and private address
//! (`FLY_APP_NAME`, `FLY_MACHINE_ID`, `FLY_REGION`, `FLY_PRIVATE_IP`). A node
//! that sees them needs no per-machine configuration: its node id is its
//! machine id, its region is the one in `regions/` that Fly region hosts,
//! its mesh certificate is issued at start from the mesh CA kept in Fly
//! secrets, and its peers come from the app's private DNS
//! ([`crate::net::discovery`]). One image and one `fly.toml` then serve
//! every region. The operator surfaces (`--admin-listen`) move from loopback
//! to the machine's private address, where `fly proxy` and Fly's metrics
//! scraper reach them and the public proxy does not.
//!
//! The cost of self-issued certificates: every machine holds the CA key. A
//! machine is trusted with the whole mesh's data anyway; rotating means
//! setting a new CA secret and redeploying, which reissues every machine's
//! certificate.

use std::collections::BTreeSet;
use std::net::IpAddr;

use thiserror::Error;

use crate::config::Config;
use crate::net::discovery::{DiscoveryError, Dns, FlyDiscovery};
use crate::net::tls::{self, TlsError};
use ride_types::ids::NodeId;
use ride_types::regions::Regions;

/// `--region`'s default, which a Fly machine replaces with its own.
const DEFAULT_REGION: &str = "local";

#[derive(Debug, Error)]
pub enum FlyError {
    #[error("FLY_MACHINE_ID is unset: name the node with --node-id")]
    NoMachineId,
    #[error("no region in --regions is hosted in Fly region {fly_region} (known: {known})")]
    UnknownRegion { fly_region: String, known: String },
    #[error("on Fly, --regions is needed to find this machine's region")]
    NoRegions,
    #[error("on Fly, --mesh-listen is needed (e.g. [::]:9090)")]
    NoMeshListen,
    #[error("cannot write the mesh certificates: {0}")]
    Certificates(#[from] TlsError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// What Fly told this machine.
#[derive(Debug, Clone)]
pub(crate) struct FlyMachine {
    pub app: String,
    pub machine_id: Option<String>,
    pub fly_region: Option<String>,
    pub private_ip: Option<IpAddr>,
}

impl FlyMachine {
    /// `Some` on Fly (`--fly-app`, from `FLY_APP_NAME`).
    pub(crate) fn from_config(config: &Config) -> Option<Self> {
        Some(Self {
            app: config.fly.app.clone()?,
            machine_id: config.fly.machine_id.clone(),
            fly_region: config.fly.region.clone(),
            private_ip: config.fly.private_ip,
        })
    }

    /// Fills in what the platform decides and the flags left open: the node
    /// id (the machine id), the region (the one its Fly region hosts) and,
    /// for a loopback `--admin-listen`, the private address (same port).
    pub(crate) fn adapt(
        &self,
        config: &mut Config,
        regions: Option<&Regions>,
    ) -> Result<(), FlyError> {
        if config.node_id.is_none() {
            config.node_id = Some(self.machine_id.clone().ok_or(FlyError::NoMachineId)?);
        }
        if config.admin_listen.ip().is_loopback()
            && let Some(private_ip) = self.private_ip
        {
            config.admin_listen.set_ip(private_ip);
        }
        if config.mesh.listen.is_none() {
            return Err(FlyError::NoMeshListen);
        }
        if config.region == DEFAULT_REGION
            && let Some(fly_region) = &self.fly_region
        {
            let regions = regions.ok_or(FlyError::NoRegions)?;
            let hosted = regions.iter().find(|r| r.fly_region == *fly_region);
            let Some(region) = hosted else {
                return Err(FlyError::UnknownRegion {
                    fly_region: fly_region.clone(),
                    known: regions
                        .iter()
                        .map(|r| format!("{} in {}", r.id, r.fly_region))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            config.region = region.id.clone();
        }
        Ok(())
    }

    /// With the mesh CA in the environment (`MESH_CA_CERT`, `MESH_CA_KEY`),
    /// writes it to `--certs` and issues this node's certificate for its id
    /// and private address. Without it, the certificates must be there.
    pub(crate) fn issue_certificate(&self, config: &Config, node: &NodeId) -> Result<(), FlyError> {
        let (Some(cert), Some(key)) = (&config.fly.mesh_ca_cert, &config.fly.mesh_ca_key) else {
            return Ok(());
        };
        let dir = &config.mesh.certs;
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| FlyError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        std::fs::write(&ca_cert, cert).map_err(io(&ca_cert))?;
        tls::write_private(&ca_key, key)?;
        let ips: Vec<IpAddr> = self.private_ip.into_iter().collect();
        tls::write_certificates(dir, std::slice::from_ref(node), &ips)?;
        tracing::info!(node = %node, "issued this machine's mesh certificate");
        Ok(())
    }

    /// Discovery of the app's other machines through `dns`: on Fly the
    /// system's resolver ([`crate::net::discovery::SystemDns`]).
    /// Discovery of the app's machines in the Fly regions `only` (all
    /// when `None`).
    pub(crate) fn discovery<D: Dns>(
        &self,
        dns: D,
        node: &NodeId,
        port: u16,
        only: Option<BTreeSet<String>>,
    ) -> FlyDiscovery<D> {
        FlyDiscovery {
            dns,
            app: self.app.clone(),
            node: node.clone(),
            port,
            only,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn regions() -> Regions {
        Regions::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../regions"
        )))
        .unwrap()
    }

    fn on_fly(fly_region: &str) -> (FlyMachine, Config) {
        let config = Config::parse_from([
            "node",
            "--fly-app",
            "ride-mesh",
            "--fly-machine-id",
            "148e21ea7e0589",
            "--fly-region",
            fly_region,
            "--mesh-listen",
            "[::]:9090",
        ]);
        (FlyMachine::from_config(&config).unwrap(), config)
    }

    #[test]
    fn takes_its_name_and_region_from_the_platform() {
        let (fly, mut config) = on_fly("hkg");
        fly.adapt(&mut config, Some(&regions())).unwrap();
        assert_eq!(config.node_id.as_deref(), Some("148e21ea7e0589"));
        assert_eq!(config.region, "dhaka-southeast");
    }

    #[test]
    fn operator_surfaces_move_to_the_private_address() {
        let (mut fly, mut config) = on_fly("sin");
        let private: IpAddr = "fdaa:0:1:a7b:1f4:8f7d:6c1b:2".parse().unwrap();
        fly.private_ip = Some(private);
        fly.adapt(&mut config, Some(&regions())).unwrap();
        assert_eq!(
            config.admin_listen,
            std::net::SocketAddr::new(private, 9100)
        );

        let (mut fly, mut config) = on_fly("sin");
        fly.private_ip = Some(private);
        config.admin_listen = "[::]:9200".parse().unwrap();
        fly.adapt(&mut config, Some(&regions())).unwrap();
        assert_eq!(config.admin_listen, "[::]:9200".parse().unwrap());
    }

    #[test]
    fn explicit_flags_win_and_unknown_fly_regions_are_refused() {
        let (fly, mut config) = on_fly("hkg");
        config.region = "dhaka-north".into();
        config.node_id = Some("chosen".into());
        fly.adapt(&mut config, Some(&regions())).unwrap();
        assert_eq!(
            (config.node_id.as_deref(), config.region.as_str()),
            (Some("chosen"), "dhaka-north")
        );

        let (fly, mut config) = on_fly("ams");
        assert!(matches!(
            fly.adapt(&mut config, Some(&regions())),
            Err(FlyError::UnknownRegion { .. })
        ));
        let (fly, mut config) = on_fly("sin");
        assert!(matches!(
            fly.adapt(&mut config, None),
            Err(FlyError::NoRegions)
        ));
    }

    #[test]
    fn issues_a_certificate_that_loads_from_the_mesh_ca_secret() {
        let ca = tls::new_ca("fly mesh").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (fly, mut config) = on_fly("sin");
        config.mesh.certs = dir.path().join("certs");
        config.fly.mesh_ca_cert = Some(ca.cert.clone());
        config.fly.mesh_ca_key = Some(ca.key.clone());
        let node = NodeId("148e21ea7e0589".into());
        fly.issue_certificate(&config, &node).unwrap();
        tls::Credentials::load(&config.mesh.certs, &node).unwrap();
        let ca_on_disk = std::fs::read_to_string(config.mesh.certs.join("ca.pem")).unwrap();
        assert_eq!(ca_on_disk, ca.cert);
    }
}
