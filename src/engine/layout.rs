//! How an engine spreads one model over devices, processes and nodes, as the engine
//! itself reports it (vLLM's `ParallelConfig` and its workers, SGLang's server args).
//! The harness never builds a cluster: it passes the engine's own options through and
//! records what the engine made of them. The layout is part of a run's identity
//! (`run.json`'s `engine.layout`; `harness compare` refuses different layouts unless
//! told), and its device count divides the per-device figures.

use serde::{Deserialize, Serialize};

/// An engine's parallel layout. An engine that reports none runs on one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParallelLayout {
    /// Ranks one layer's tensors are split over.
    pub tensor_parallel: u32,
    /// Stages the layers are split into.
    pub pipeline_parallel: u32,
    /// Model replicas, each with its own scheduler.
    #[serde(default = "one")]
    pub data_parallel: u32,
    /// The engine's distributed executor (vLLM `uni`, `mp`, `ray`; SGLang `mp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Every rank the engine reports, in rank order; empty where it reports none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<Rank>,
    /// Where these facts come from, in the engine's terms.
    pub source: String,
}

fn one() -> u32 {
    1
}

/// One worker of a layout, as the engine reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rank {
    /// Global rank.
    pub rank: u32,
    /// The host it runs on (its hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its node's address, where a cluster manager reports one (Ray's node IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
    /// Ray's node id, on the Ray backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ray_node_id: Option<String>,
    /// Its process on that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The device it computes on (`cuda:0`, `cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Its tensor- and pipeline-parallel ranks, where the engine says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp_rank: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pp_rank: Option<u32>,
}

impl ParallelLayout {
    /// Devices the layout spans: tensor × pipeline × data parallel.
    pub fn devices(&self) -> u32 {
        self.tensor_parallel.max(1) * self.pipeline_parallel.max(1) * self.data_parallel.max(1)
    }

    /// `tp2 pp1 dp1`: what `compare` holds equal.
    pub fn shape(&self) -> String {
        format!(
            "tp{} pp{} dp{}",
            self.tensor_parallel, self.pipeline_parallel, self.data_parallel
        )
    }

    /// Distinct nodes among the ranks (by hostname, or Ray's node id where given).
    pub fn nodes(&self) -> usize {
        let mut n: Vec<&str> = self
            .ranks
            .iter()
            .filter_map(|r| r.ray_node_id.as_deref().or(r.node.as_deref()))
            .collect();
        n.sort_unstable();
        n.dedup();
        n.len()
    }

    /// One line for the run's header: `tp2 pp1 dp1 over mp: 2 ranks on 1 node`.
    pub fn describe(&self) -> String {
        let mut s = self.shape();
        if let Some(b) = &self.backend {
            s.push_str(&format!(" over {b}"));
        }
        if !self.ranks.is_empty() {
            let nodes = self.nodes();
            s.push_str(&format!(
                ": {} rank{} on {} node{}",
                self.ranks.len(),
                if self.ranks.len() == 1 { "" } else { "s" },
                nodes,
                if nodes == 1 { "" } else { "s" }
            ));
        }
        s
    }

    /// Ranks on another host than `host` (by hostname).
    pub fn remote_ranks(&self, host: &str) -> usize {
        self.ranks
            .iter()
            .filter(|r| r.node.as_deref().is_some_and(|n| n != host))
            .count()
    }

    /// What the harness's telemetry (NVML and RAPL, read on this host) does not cover,
    /// when ranks run elsewhere.
    pub fn telemetry_scope(&self, host: &str) -> Option<String> {
        let remote = self.remote_ranks(host);
        (remote > 0).then(|| {
            format!(
                "telemetry (gpu.csv, energy, memory) covers this host ({host}) only: {remote} of \
                 the layout's {} ranks run on other nodes, whose devices it does not read",
                self.ranks.len()
            )
        })
    }
}

/// This host's name (a rank's `node` when the engine's ranks are local).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The shape of an optional layout (no layout: one device).
pub fn shape_of(layout: Option<&ParallelLayout>) -> String {
    layout.map_or_else(|| "tp1 pp1 dp1".to_string(), ParallelLayout::shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(tp: u32, pp: u32, nodes: &[&str]) -> ParallelLayout {
        ParallelLayout {
            tensor_parallel: tp,
            pipeline_parallel: pp,
            data_parallel: 1,
            backend: Some("ray".into()),
            ranks: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| Rank {
                    rank: i as u32,
                    node: Some("host".into()),
                    ray_node_id: Some((*n).into()),
                    ..Rank::default()
                })
                .collect(),
            source: "test".into(),
        }
    }

    #[test]
    fn devices_nodes_and_shape() {
        let l = layout(1, 2, &["a", "b"]);
        assert_eq!(l.devices(), 2);
        assert_eq!(l.nodes(), 2, "Ray's node id tells nodes on one host apart");
        assert_eq!(l.describe(), "tp1 pp2 dp1 over ray: 2 ranks on 2 nodes");
        assert_eq!(shape_of(None), "tp1 pp1 dp1");
        assert_eq!(layout(2, 1, &["a", "a"]).nodes(), 1);
        // Two Ray nodes on one host: telemetry reads both.
        assert_eq!(l.telemetry_scope("host"), None);
        let mut far = l.clone();
        far.ranks[1].node = Some("other".into());
        let said = far.telemetry_scope("host").unwrap();
        assert!(said.contains("1 of the layout's 2 ranks"), "{said}");
    }
}
