//! Workloads: where requests come from. (Placeholder until the workload branch lands.)
use std::sync::Arc;

pub struct WorkItem {
    pub prompt: Arc<[u32]>,
    pub output_len: u32,
}

pub struct Workload {
    pub items: Vec<WorkItem>,
    pub description: String,
}

impl Workload {
    pub fn get(&self, i: usize) -> &WorkItem {
        &self.items[i % self.items.len()]
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
