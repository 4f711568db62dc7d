//! A region's outage on demand: every node of one region killed with
//! SIGKILL, as when its machines are lost (no goodbye to the peers, nothing
//! flushed), and started again later on the same data folders, so that a
//! script can show or test the mesh failing a region over and back.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use crate::Error;
use crate::cluster::Cluster;
use crate::process::stop;

/// How long killed nodes get to be gone (SIGKILL is not refused; this
/// only covers a loaded machine) before their ports may be reused.
const GONE_WITHIN: Duration = Duration::from_secs(5);

impl Cluster {
    /// The plan's indices of `region`'s nodes.
    fn region_nodes(&self, region: &str) -> Result<Vec<usize>, Error> {
        if !self.plan.regions.iter().any(|r| r.id == region) {
            return Err(Error::UnknownRegion(region.into()));
        }
        let nodes = self.plan.nodes.iter().enumerate();
        Ok(nodes
            .filter(|(_, n)| n.region == region)
            .map(|(i, _)| i)
            .collect())
    }

    /// Kills every running node of `region` with SIGKILL and waits until
    /// they are gone. They are forgotten first (state and pid files), so a
    /// supervisor reports them stopped on purpose and does not start them
    /// again. Returns the id and pid of each node killed.
    pub fn kill_region(&mut self, region: &str) -> Result<Vec<(String, u32)>, Error> {
        let ids: Vec<String> = self
            .region_nodes(region)?
            .into_iter()
            .map(|i| self.plan.nodes[i].id.clone())
            .collect();
        let killed: Vec<(String, u32)> = ids
            .into_iter()
            .filter_map(|id| self.forget_pid(&id).map(|pid| (id, pid)))
            .collect();
        self.save()?;
        let pids: Vec<u32> = killed.iter().map(|&(_, pid)| pid).collect();
        stop(&pids, "KILL", GONE_WITHIN);
        Ok(killed)
    }

    /// Starts every node of `region` again, with the command line `up`
    /// gave each, on the same data folders, and waits until each is ready.
    /// Returns their processes by node id.
    pub async fn start_region(&mut self, region: &str) -> Result<BTreeMap<String, Child>, Error> {
        let mut spawned = Vec::new();
        for i in self.region_nodes(region)? {
            let child = self.spawn_node(i);
            self.save()?;
            spawned.push((i, child?));
        }
        let mut started = BTreeMap::new();
        for (i, mut child) in spawned {
            self.wait_node(i, &mut child).await?;
            started.insert(self.plan.nodes[i].id.clone(), child);
        }
        Ok(started)
    }
}
