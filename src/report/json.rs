//! `summary.json`: run metadata, metric definitions and one object per load point with
//! vLLM-style flat keys. With exactly one point, its keys are repeated at the top level,
//! so `summary.json["output_throughput"]` works as with `vllm bench` output.

use super::{
    flat_keys, measure_definitions, shown_in, Exporter, ReportError, RunResult, INSTRUMENT_BANNER,
};
use crate::core::request::FinishReason;
use crate::metrics::{catalog, Summary};
use crate::trace::RequestTrace;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

/// Writes `summary.json`.
pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn file_name(&self) -> &'static str {
        "summary.json"
    }

    fn render(&self, run: &RunResult, _records: &[RequestTrace]) -> Result<Vec<u8>, ReportError> {
        let mut out =
            serde_json::to_vec_pretty(&document(run)).map_err(|e| ReportError::Render {
                file: "summary.json",
                message: e.to_string(),
            })?;
        out.push(b'\n');
        Ok(out)
    }
}

/// A JSON tree whose objects keep their key order (serde_json's `Map` sorts keys
/// unless its `preserve_order` feature is on, which would change it crate-wide).
enum Node {
    Value(Value),
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Value(v) => v.serialize(s),
            Node::Object(kv) => {
                let mut m = s.serialize_map(Some(kv.len()))?;
                for (k, v) in kv {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Node::Array(items) => {
                let mut a = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    a.serialize_element(i)?;
                }
                a.end()
            }
        }
    }
}

fn val(v: impl Into<Value>) -> Node {
    Node::Value(v.into())
}

/// `failures` and `failed_by_reason`, with reasons by name.
fn failure_keys(s: &Summary) -> Vec<(String, Node)> {
    let failures = s
        .failures
        .iter()
        .map(|f| {
            val(json!({
                "id": f.id,
                "reason": FinishReason::name(f.reason),
                "error": f.error,
            }))
        })
        .collect();
    let by_reason = s
        .failed_by_reason
        .iter()
        .map(|(k, v)| (k.clone(), val(*v)))
        .collect();
    vec![
        ("failed_by_reason".into(), Node::Object(by_reason)),
        ("failures".into(), Node::Array(failures)),
    ]
}

/// The keys of one point: index, label, the load point's own fields (`mode`, `batch`,
/// ...), the flat metric keys, then the failure lists.
fn point_keys(run: &RunResult, i: usize) -> Vec<(String, Node)> {
    let p = &run.points[i];
    let mut kv: Vec<(String, Node)> = vec![
        ("point".into(), val(i)),
        ("label".into(), val(p.point.label())),
        ("mode".into(), val(p.point.mode())),
    ];
    // The load point's own fields (`batch`, or `rate` and `burstiness`), as the CLI names them.
    if let Ok(Value::Object(fields)) = serde_json::to_value(p.point) {
        kv.extend(
            fields
                .into_iter()
                .filter(|(k, _)| k != "mode")
                .map(|(k, v)| (k, Node::Value(v))),
        );
    }
    kv.extend(
        flat_keys(p, run.catalog, &shown_in(p))
            .into_iter()
            .map(|(k, v)| (k, Node::Value(v))),
    );
    kv.extend(failure_keys(&p.summary));
    // Conversation runs: the requests by turn index, and the conversations.
    if let Some(t) = &p.summary.by_turn {
        kv.push((
            "by_turn".into(),
            val(serde_json::to_value(t).unwrap_or(Value::Null)),
        ));
    }
    if let Some(c) = &p.summary.conversations {
        kv.push((
            "conversations".into(),
            val(serde_json::to_value(c).unwrap_or(Value::Null)),
        ));
    }
    // Each measurement in full (its figures are flat above), by name.
    let measures = p
        .measures
        .0
        .iter()
        .map(|r| (r.name.clone(), val(r.detail.clone())))
        .collect();
    kv.push(("measures".into(), Node::Object(measures)));
    kv
}

/// `harness search`'s section: what it looked for, the answer, and every probe with
/// the counts its verdict comes from (`good_requests / requests`, recomputable from
/// requests.jsonl: the requests whose `point` is the probe's).
fn search_keys(run: &RunResult) -> Option<Node> {
    let spec = run.meta.search?;
    let r = run.search()?;
    let probes = r
        .probes
        .iter()
        .map(|p| {
            Node::Object(vec![
                ("point".into(), val(p.point)),
                ("label".into(), val(run.points[p.point].point.label())),
                ("value".into(), val(p.value)),
                ("requests".into(), val(p.requests)),
                ("good_requests".into(), val(p.good_requests)),
                ("good_fraction".into(), val(p.good_fraction)),
                (
                    "verdict".into(),
                    val(serde_json::to_value(p.verdict).unwrap_or(Value::Null)),
                ),
            ])
        })
        .collect();
    Some(Node::Object(vec![
        ("method".into(), val("bisection")),
        ("dimension".into(), val(spec.dimension.name())),
        ("bracket".into(), val(json!([spec.lo, spec.hi]))),
        ("resolution".into(), val(spec.resolution)),
        ("min_good_fraction".into(), val(spec.min_good_fraction)),
        (
            "slo".into(),
            val(serde_json::to_value(run.slo()).unwrap_or(Value::Null)),
        ),
        ("outcome".into(), val(r.outcome.name())),
        ("highest_passing".into(), val(r.highest_passing)),
        ("lowest_failing".into(), val(r.lowest_failing)),
        ("description".into(), val(run.search_line())),
        ("probes".into(), Node::Array(probes)),
    ]))
}

fn document(run: &RunResult) -> Node {
    let mut top: Vec<(String, Node)> = vec![(
        "harness".into(),
        val(json!({"name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION")})),
    )];
    top.push(("instrument".into(), val(run.instrument())));
    if run.instrument() {
        top.push(("instrument_note".into(), val(INSTRUMENT_BANNER)));
    }
    top.push((
        "meta".into(),
        val(serde_json::to_value(&run.meta).unwrap_or(Value::Null)),
    ));
    top.push((
        "slo".into(),
        val(serde_json::to_value(run.slo()).unwrap_or(Value::Null)),
    ));
    let mut definitions: Vec<(String, Node)> = catalog::definitions(run.catalog)
        .into_iter()
        .map(|(k, v)| (k, val(v)))
        .collect();
    definitions.extend(
        measure_definitions(run)
            .into_iter()
            .map(|(k, v)| (k, val(v))),
    );
    top.push(("definitions".into(), Node::Object(definitions)));
    if let Some(search) = search_keys(run) {
        top.push(("search".into(), search));
    }
    if run.points.len() == 1 {
        // vLLM-compatible: the one point's keys at the top level too.
        top.extend(point_keys(run, 0));
    }
    let points = (0..run.points.len())
        .map(|i| Node::Object(point_keys(run, i)))
        .collect();
    top.push(("points".into(), Node::Array(points)));
    Node::Object(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    fn render(run: &RunResult) -> (String, Value) {
        let bytes = JsonExporter.render(run, &[]).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let v = serde_json::from_str(&text).unwrap();
        (text, v)
    }

    #[test]
    fn points_carry_flat_keys_equal_to_the_summary() {
        let (run, _) = run(false);
        let (text, v) = render(&run);
        assert!(text.ends_with("}\n"));
        assert_eq!(v["harness"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["meta"]["engine"]["name"], "vllm");
        assert_eq!(v["instrument"], false);
        assert!(v.get("instrument_note").is_none());
        assert_eq!(v["slo"]["ttft_ms"], 150.0);
        assert_eq!(
            v["definitions"]["tpot"].as_str(),
            crate::metrics::catalog::metric("tpot").map(|m| m.definition)
        );
        // Two points: no flat keys at the top level.
        assert!(v.get("output_throughput").is_none());

        let p0 = &v["points"][0];
        let s = &run.points[0].summary;
        assert_eq!(p0["mode"], "batch");
        assert_eq!(p0["batch"], 2);
        assert_eq!(p0["label"], "batch=2");
        assert_eq!(p0["completed"], s.completed);
        assert_eq!(p0["failed"], 1);
        assert_eq!(p0["duration"], 0.5);
        assert_eq!(p0["output_throughput"], s.output_throughput.unwrap());
        assert_eq!(p0["request_goodput"], 2.0);
        assert_eq!(p0["good_requests"], 1);
        assert_eq!(p0["mean_ttft_ms"], s.ttft.mean.unwrap());
        assert_eq!(p0["median_tpot_ms"], s.tpot.median.unwrap());
        assert_eq!(p0["std_itl_ms"], s.itl.std.unwrap());
        assert_eq!(p0["p99_e2el_ms"], s.e2el.p99.unwrap());
        assert_eq!(p0["harness_us_per_step"], 10.0);
        assert_eq!(p0["measures"]["harness_cost"]["steps"], 10);
        assert_eq!(
            v["definitions"]["harness_cost"].as_str(),
            Some(<crate::driver::HarnessCost as crate::core::measure::Measure>::DEFINITION)
        );
        assert_eq!(p0["rounds"], s.rounds.count);
        assert_eq!(p0["max_per_user_output_throughput_tok_s"], 40.0);
        assert_eq!(p0["mean_engine_ttft_delta_ms"], 0.5);
        assert_eq!(p0["failed_by_reason"], json!({"timeout": 1}));
        assert_eq!(
            p0["failures"],
            json!([{"id": 2, "reason": "timeout", "error": "no token within 0.5 s"}])
        );

        let p1 = &v["points"][1];
        assert_eq!(p1["mode"], "concurrency");
        assert_eq!(p1["concurrency"], 4);
        assert!(p1.get("mean_engine_ttft_delta_ms").is_none());
        assert_eq!(p1["failures"], json!([]));
        // Key order is kept: metadata first, points last.
        assert!(text.find("\"harness\"").unwrap() < text.find("\"definitions\"").unwrap());
        assert!(text.find("\"definitions\"").unwrap() < text.find("\n  \"points\"").unwrap());
    }

    #[test]
    fn one_point_is_also_flat_at_the_top_and_instrument_is_labelled() {
        let (mut run, _) = run(true);
        run.points.truncate(1);
        let (_, v) = render(&run);
        assert_eq!(v["instrument"], true);
        assert_eq!(v["instrument_note"], INSTRUMENT_BANNER);
        for k in [
            "output_throughput",
            "mean_ttft_ms",
            "p99_tpot_ms",
            "completed",
            "failures",
        ] {
            assert_eq!(v[k], v["points"][0][k], "{k}");
        }
        assert_eq!(v["mode"], "batch");
        assert_eq!(v["request_throughput"], 4.0);
    }

    #[test]
    fn a_search_states_its_answer_and_every_probe() {
        use crate::metrics::capacity::{Dimension, SearchSpec};
        let (mut run, _) = run(false);
        assert!(render(&run).1.get("search").is_none());
        run.meta.search = Some(SearchSpec {
            dimension: Dimension::Concurrency,
            lo: 2.0,
            hi: 4.0,
            resolution: 1.0,
            min_good_fraction: 0.5,
        });
        let (_, v) = render(&run);
        let s = &v["search"];
        // Point 0 (value 2): 1 of 3 requests good, below 0.5: the low end fails.
        assert_eq!(s["outcome"], "none_feasible", "{s}");
        assert_eq!(s["bracket"], json!([2.0, 4.0]));
        assert_eq!(s["slo"]["ttft_ms"], 150.0);
        assert_eq!(s["lowest_failing"], 2.0);
        assert_eq!(s["highest_passing"], Value::Null);
        let p0 = &s["probes"][0];
        assert_eq!(
            (p0["requests"].as_u64(), p0["good_requests"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(
            (p0["verdict"].as_str(), p0["label"].as_str()),
            (Some("fail"), Some("batch=2"))
        );
        assert_eq!(s["probes"][1]["verdict"], "pass");
        assert!(s["description"].as_str().is_some_and(
            |d| d.ends_with("none feasible in the bracket (concurrency=2 fails already); 2 probes")
        ));
        let t = crate::report::table(&run, crate::metrics::catalog::View::Brief, None);
        assert!(
            t.contains("Search: bisection on concurrency over [2, 4]"),
            "{t}"
        );
    }

    #[test]
    fn missing_values_are_null_never_nan() {
        let (mut run, _) = run(false);
        run.points[0].summary = crate::metrics::summarize(&[], &crate::metrics::Slo::default());
        let (text, v) = render(&run);
        assert!(!text.contains("NaN") && !text.contains("Infinity"));
        assert_eq!(v["points"][0]["request_throughput"], Value::Null);
        assert_eq!(v["points"][0]["p99_ttft_ms"], Value::Null);
    }
}
