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
    pub fn to_jsonl(&self) -> Vec<u8> {
        Vec::new()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LengthDist {
    Fixed { len: u32 },
    Uniform { min: u32, max: u32 },
    Normal { mean: f64, std: f64 },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "dataset", rename_all = "snake_case")]
pub enum WorkloadSpec {
    Synthetic { input_len: LengthDist, output_len: LengthDist },
    Sharegpt { path: std::path::PathBuf, output_len: Option<u32> },
    Prompts { path: std::path::PathBuf, output_len: u32 },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkloadError(pub String);

pub fn parse_length(s: &str) -> Result<LengthDist, WorkloadError> {
    s.parse().map(|len| LengthDist::Fixed { len }).map_err(|_| WorkloadError(format!("bad length {s}")))
}

pub struct Tokenizer;
impl Tokenizer {
    pub fn from_model_dir(_p: &std::path::Path) -> Result<Tokenizer, WorkloadError> {
        Ok(Tokenizer)
    }
    pub fn encode(&self, _t: &str) -> Result<Vec<u32>, WorkloadError> {
        Ok(vec![1])
    }
    pub fn decode(&self, _t: &[u32]) -> Result<String, WorkloadError> {
        Ok(String::new())
    }
    pub fn from_file(_p: &std::path::Path) -> Result<Tokenizer, WorkloadError> {
        Ok(Tokenizer)
    }
}

pub fn build(spec: &WorkloadSpec, _t: Option<&Tokenizer>, count: usize, _seed: u64) -> Result<Workload, WorkloadError> {
    let WorkloadSpec::Synthetic { input_len: LengthDist::Fixed { len: i }, output_len: LengthDist::Fixed { len: o } } = spec else {
        return Err(WorkloadError("stub".into()));
    };
    let items = (0..count).map(|_| WorkItem { prompt: vec![1u32; *i as usize].into(), output_len: *o }).collect();
    Ok(Workload { items, description: "stub".into() })
}
